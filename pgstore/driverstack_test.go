package pgstore_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// The statement mode follows from what the connection proves, not from
// the driver's Go type: lib/pq bare or wrapped gets the driver's prepared
// statements on a direct connection only, and SQL PREPARE/EXECUTE with
// inlined values through PgBouncer; an explicit option is honoured.
func TestStatementPlanFollowsTheStack(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	open := func(t *testing.T, driver string, pooled bool) *sqlx.DB {
		if pooled {
			return bouncer.Open(t, driver, "")
		}
		db, err := sqlx.Open(driver, pgtest.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	for _, tc := range []struct {
		driver string
		pooled bool
		opts   []pgstore.Option
		want   string
	}{
		{"postgres", false, nil, "driver prepared statements (lib/pq, direct connection)"},
		{pgtest.WrappedPQ, false, nil, "driver prepared statements (lib/pq, direct connection)"},
		{"postgres", true, nil, "SQL PREPARE/EXECUTE, values inlined (lib/pq, not proven direct)"},
		{pgtest.WrappedPQ, true, nil, "SQL PREPARE/EXECUTE, values inlined (lib/pq, not proven direct)"},
		{pgtest.WrappedPQ, false, []pgstore.Option{pgstore.WithPreparedStatements()}, "SQL PREPARE/EXECUTE, values inlined (lib/pq, not proven direct)"},
		{pgtest.WrappedPQ, true, []pgstore.Option{pgstore.WithDriverPreparedStatements()}, "driver prepared statements (lib/pq, not proven direct)"},
	} {
		name := tc.driver
		if tc.pooled {
			name += "/pgbouncer"
		}
		if tc.opts != nil {
			name += "/option"
		}
		t.Run(name, func(t *testing.T) {
			b := pgstore.New(open(t, tc.driver, tc.pooled), tc.opts...)
			got, err := b.StatementMode(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("plan = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// A probe that cannot reach the database is an error, and is tried again
// at the next call.
func TestStatementPlanProbeRetries(t *testing.T) {
	db, err := sqlx.Open("postgres", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := pgstore.New(db)
	for range 2 {
		if _, err := b.StatementMode(context.Background()); err == nil || !strings.Contains(err.Error(), "probe") {
			t.Errorf("probe of a closed port: %v, want an error naming the probe", err)
		}
	}
	// The prefix once: "pgsession: migrate: probe the database driver and
	// connection: ...", the driver's error wrapped.
	for name, call := range map[string]func(context.Context) error{"Migrate": b.Migrate, "Check": b.Check} {
		err := call(context.Background())
		var op *net.OpError
		if err == nil || strings.Count(err.Error(), "pgsession:") != 1 || !strings.Contains(err.Error(), ": probe the database driver") || !errors.As(err, &op) {
			t.Errorf("%s on a closed port = %v; want the probe's error, prefixed once, wrapping the dial error", name, err)
		}
	}
}

// ownsTCPConn holds for a connection of this process, seen from either
// end, and for nothing else.
func TestOwnsTCPConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	other := netip.AddrPortFrom(local.Addr(), local.Port()+1)
	for _, tc := range []struct {
		local, remote netip.AddrPort
		want          bool
	}{
		{local, remote, true},
		{remote, local, true}, // the accepted end is this process's too
		{other, remote, false},
		{local, other, false},
	} {
		if got := pgstore.OwnsTCPConn(tc.local, tc.remote); got != tc.want {
			t.Errorf("ownsTCPConn(%v, %v) = %v, want %v", tc.local, tc.remote, got, tc.want)
		}
	}
}
