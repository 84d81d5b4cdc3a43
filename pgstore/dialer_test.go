package pgstore_test

import (
	"context"
	"database/sql"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/pgsession/pgsession/pgstore"
)

// A server that accepts connections and never answers (a stalled one): a
// lib/pq pool dialing through ReadDeadlineDialer gives up after the
// dialer's timeout, although lib/pq ignores the context once connected.
// With the real server, TestFaultBlackhole covers statements.
func TestReadDeadlineDialerStalledServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read or answered
			mu.Unlock()
		}
	}()
	c, err := pq.NewConnector("postgres://postgres@" + ln.Addr().String() + "/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	c.Dialer(pgstore.ReadDeadlineDialer{Timeout: timeout})
	db := sql.OpenDB(c)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err = db.PingContext(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatal("ping of a server that never answers succeeded")
	}
	// database/sql may try a second connection after the first fails.
	if took > 3*timeout+time.Second {
		t.Errorf("ping failed after %v (%v), want within about %v", took, err, timeout)
	}
	t.Logf("ping failed after %v: %v", took.Round(time.Millisecond), err)
}
