package systemtest_test

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// drivers are the database/sql drivers the fault, failover and
// multi-instance tests run on: lib/pq and pgx (both linked here).
var drivers = pgtest.Drivers()

// proxiedApp starts a fault proxy in front of the test server and an app
// whose pool (driver) goes through it, on a fresh table.
func proxiedApp(t *testing.T, driver string, opts ...pgsession.PostgresOption) (*pgtest.Proxy, *topoApp) {
	t.Helper()
	admin := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, admin) + ".sessions"
	p, dsn := pgtest.NewProxyFor(t, pgtest.URL())
	return p, newTopoApp(t, driver, dsn, table, opts...)
}

// background runs k's clients in the background until the returned stop
// function is called (also at the end of t), which returns them.
func background(t *testing.T, k *topoChecker, clients int, d time.Duration, maxRequests int) (stop func() []*topoClient) {
	stopc := make(chan struct{})
	done := make(chan []*topoClient, 1)
	go func() { done <- k.run(clients, d, maxRequests, stopc) }()
	var once sync.Once
	var cs []*topoClient
	stop = func() []*topoClient {
		once.Do(func() {
			close(stopc)
			select {
			case cs = <-done:
			case <-time.After(60 * time.Second):
				t.Error("the load did not stop within 60s")
			}
		})
		return cs
	}
	t.Cleanup(func() { stop() })
	return stop
}

// The proxy cuts the connection right after every 7th statement reached the
// server, dropping its answer, under a load of increments, rotations,
// logins and logouts: whatever the driver does with a statement whose fate
// it cannot know, no acknowledged increment is lost, an acknowledged login
// or rotation carries a working cookie, dead keys stay dead, and no save
// fails on a duplicate key.
func TestFaultCutAfterStatement(t *testing.T) {
	heavy(t)
	d := 3 * time.Second
	if longRun() {
		d = 30 * time.Second
	}
	modes := []struct {
		name string
		opts []pgsession.PostgresOption
	}{
		{"", nil},
		// Each new connection prepares the statements again.
		{"/driver-prepared", []pgsession.PostgresOption{pgsession.WithDriverPreparedStatements()}},
	}
	for _, driver := range drivers {
		for _, close := range []string{"fin", "rst"} {
			for _, mode := range modes {
				t.Run(driver+"/"+close+mode.name, func(t *testing.T) {
					p, a := proxiedApp(t, driver, append(mode.opts, pgsession.WithQueryTimeout(5*time.Second))...)
					k := newTopoChecker(t, func() string { return a.srv.URL }, 30*time.Second)
					p.CutAfterStatements(7, close == "rst")
					cs := k.run(8, d, 5000, nil)
					p.CutAfterStatements(0, false)
					k.settle(cs, 10*time.Second)
					t.Logf("%s, %v; %s; duplicate-key errors %d; stats %+v", driver, p, k.summary(), a.duplicateKeys(), a.m.Stats())
					k.report(t)
					if n := a.duplicateKeys(); n != 0 {
						t.Errorf("%d saves failed on a duplicate key", n)
					}
					if p.Stats().Cuts == 0 || k.acks.Load() == 0 {
						t.Error("the test exercised too little: no cut or no acknowledged write")
					}
				})
			}
		}
	}
}

// The network stalls (the proxy holds everything, connections stay open)
// under load, with WithQueryTimeout(2s): on pgx every request ends within
// the timeout and a second; service is back within a second of the network.
// lib/pq honours the timeout only with pgtest.DeadlineDialer (see the
// lib/pq subtest and docs/topology-figures.md); without it a request hangs
// for as long as the stall lasts.
func TestFaultBlackhole(t *testing.T) {
	heavy(t)
	const timeout = 2 * time.Second
	stall := 3 * time.Second
	if longRun() {
		stall = 35 * time.Second
	}
	ds := append(slices.Clone(drivers), deadlineDriver) // lib/pq alone and with the dialer that bounds it, and pgx
	for _, driver := range ds {
		t.Run(driver, func(t *testing.T) {
			p, a := proxiedApp(t, driver, pgsession.WithQueryTimeout(timeout))
			// Enough idle room that database/sql never closes a connection
			// as it returns it to the pool: that close deallocates the
			// prepared statements over the network, in the request's
			// goroutine and without its context (pgx bounds it at 5s, lib/pq
			// not at all), so a stall would hold a request that has already
			// saved.
			a.db.SetMaxOpenConns(16)
			a.db.SetMaxIdleConns(16)
			k := newTopoChecker(t, func() string { return a.srv.URL }, stall+30*time.Second)
			stop := background(t, k, 8, stall+20*time.Second, 1<<20)
			time.Sleep(500 * time.Millisecond)
			t.Logf("stall from %s", time.Now().Format("15:04:05.000"))
			p.Blackhole(true)
			time.Sleep(stall)
			p.Blackhole(false)
			back, ok := k.recovery(10 * time.Second)
			time.Sleep(500 * time.Millisecond)
			cs := stop()
			k.settle(cs, 10*time.Second)
			t.Logf("%s, stall %v: recovered %v after; %s; stats %+v", driver, stall, back.Round(time.Millisecond), k.summary(), a.m.Stats())
			k.report(t)
			if !ok || back > time.Second {
				t.Errorf("service back %v after the network (ok=%v), want within 1s", back, ok)
			}
			slow := k.slowest()
			// A request makes two bounded calls (load, save); on a stall
			// only the first of them can be stuck. With lib/pq that call
			// can be a statement and then, database/sql having retried it
			// on a new connection, that connection's startup, which lib/pq
			// bounds by the dialer's read deadline, not by the context.
			switch bound := timeout + time.Second; {
			case driver == "pgx" && slow > bound:
				t.Errorf("slowest request %v during the stall, want within %v", slow, bound)
			case driver == deadlineDriver && slow > timeout+bound:
				t.Errorf("slowest request %v during the stall, want within %v", slow, timeout+bound)
			}
		})
	}
}

// +50 ms on every round trip, with WithQueryTimeout(2s). With the pool
// unbounded and 8 clients, every request succeeds, only slower. With a pool
// of 2 connections for 64 clients, requests wait for a connection and some
// hit the timeout (500), but nothing hangs beyond the bound. Either way
// nothing acknowledged is lost, and service is normal at once when the
// latency goes.
func TestFaultLatencyPoolExhaustion(t *testing.T) {
	heavy(t)
	const timeout = 2 * time.Second
	d := 3 * time.Second
	if longRun() {
		d = 20 * time.Second
	}
	for _, driver := range drivers {
		for _, tc := range []struct {
			name             string
			maxOpen, clients int
		}{{"latency", 0, 8}, {"latency+pool2x64", 2, 64}} {
			t.Run(driver+"/"+tc.name, func(t *testing.T) {
				p, a := proxiedApp(t, driver, pgsession.WithQueryTimeout(timeout))
				a.db.SetMaxOpenConns(tc.maxOpen)
				p.SetLatency(50 * time.Millisecond)
				k := newTopoChecker(t, func() string { return a.srv.URL }, 30*time.Second)
				cs := k.run(tc.clients, d, 1000, nil)
				if n := k.statuses()[http.StatusInternalServerError]; tc.maxOpen == 0 && n != 0 {
					t.Errorf("%d requests failed with 50ms of latency and no pool limit", n)
				}
				p.SetLatency(0)
				back, ok := k.recovery(5 * time.Second)
				k.settle(cs, 10*time.Second)
				t.Logf("%s, %s: %s; recovered in %v; stats %+v", driver, tc.name, k.summary(), back.Round(time.Millisecond), a.m.Stats())
				k.report(t)
				if !ok || back > time.Second {
					t.Errorf("service back %v after the latency went (ok=%v)", back, ok)
				}
				for code, n := range k.statuses() {
					if code != http.StatusOK && code != http.StatusInternalServerError && code != http.StatusConflict {
						t.Errorf("status %d (%d times), want 200, 500 or 409", code, n)
					}
				}
				slow := k.slowest()
				if slow > 2*timeout+time.Second {
					t.Errorf("slowest request %v, want within %v (a load and a save, each bounded)", slow, 2*timeout+time.Second)
				}
				if k.acks.Load() == 0 {
					t.Error("no write was acknowledged")
				}
			})
		}
	}
}

// The table is locked (ACCESS EXCLUSIVE) for 2s (10s with PGSESSION_LONG=1)
// under load with WithQueryTimeout(1s): requests fail within the bound,
// nothing acknowledged is lost, and service is back within a second of the
// lock's release.
func TestFaultTableLock(t *testing.T) {
	heavy(t)
	const timeout = time.Second
	hold := 2 * time.Second
	if longRun() {
		hold = 10 * time.Second
	}
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			admin := pgtest.Open(t, "postgres")
			table := pgtest.Schema(t, admin) + ".sessions"
			a := newTopoApp(t, driver, pgtest.URL(), table, pgsession.WithQueryTimeout(timeout))
			k := newTopoChecker(t, func() string { return a.srv.URL }, 30*time.Second)
			stop := background(t, k, 8, hold+20*time.Second, 1<<20)
			time.Sleep(300 * time.Millisecond)
			tx, err := admin.Beginx()
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.Exec("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(hold)
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			back, ok := k.recovery(10 * time.Second)
			time.Sleep(300 * time.Millisecond)
			cs := stop()
			k.settle(cs, 10*time.Second)
			t.Logf("%s, lock %v: recovered %v after; %s", driver, hold, back.Round(time.Millisecond), k.summary())
			k.report(t)
			if !ok || back > time.Second {
				t.Errorf("service back %v after the lock went (ok=%v), want within 1s", back, ok)
			}
			slow := k.slowest()
			if slow > 2*timeout+time.Second {
				t.Errorf("slowest request %v, want within %v", slow, 2*timeout+time.Second)
			}
		})
	}
}

// The server restarts under load, cleanly (fast) and after a crash
// (immediate): nothing acknowledged is lost, no dead key comes back, and
// service is back within a second of the server.
func TestFaultRestart(t *testing.T) {
	heavy(t)
	const timeout = 2 * time.Second
	for _, driver := range drivers {
		for _, mode := range []string{"fast", "immediate"} {
			t.Run(driver+"/"+mode, func(t *testing.T) {
				c := pgtest.NewCluster(t)
				a := newTopoApp(t, driver, c.URL("pgsession_restart"), "sessions", pgsession.WithQueryTimeout(timeout))
				k := newTopoChecker(t, func() string { return a.srv.URL }, 30*time.Second)
				stop := background(t, k, 8, 30*time.Second, 1<<20)
				rounds := 1
				if longRun() {
					rounds = 5
				}
				var worst time.Duration
				for range rounds {
					time.Sleep(500 * time.Millisecond)
					if mode == "fast" {
						c.StopFast()
					} else {
						c.Stop()
					}
					time.Sleep(300 * time.Millisecond)
					c.Start()
					back, ok := k.recovery(10 * time.Second)
					if !ok || back > time.Second {
						t.Errorf("service back %v after the server (ok=%v), want within 1s", back, ok)
					}
					worst = max(worst, back)
				}
				time.Sleep(300 * time.Millisecond)
				cs := stop()
				k.settle(cs, 10*time.Second)
				t.Logf("%s, %d %s restarts: recovered at worst %v after; %s", driver, rounds, mode, worst.Round(time.Millisecond), k.summary())
				k.report(t)
			})
		}
	}
}
