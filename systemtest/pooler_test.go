package systemtest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// poolerDrivers are the driver configurations that must work behind
// PgBouncer in transaction mode: lib/pq with its default DSN, and pgx
// told not to rely on prepared statements.
var poolerDrivers = []struct{ name, driver, params string }{
	{"libpq", "postgres", ""},
	{"libpq-wrapped", pgtest.WrappedPQ, ""},
	// pgx (default_query_exec_mode=exec): see pgx_test.go.
}

// The conformance suite passes through PgBouncer in transaction mode.
func TestPostgresBackendPgBouncer(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for _, d := range poolerDrivers {
		t.Run(d.name, func(t *testing.T) {
			db := bouncer.Open(t, d.driver, d.params)
			pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
				b, _ := pgtest.NewBackendOn(t, db)
				return b
			})
		})
	}
}

// Behind PgBouncer: Migrate's transaction-scoped lock, the cleanup's
// per-batch lock and literal quoting work, and no advisory lock is left.
func TestPgBouncerMigrateCleanupQuoting(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for _, d := range poolerDrivers {
		t.Run(d.name, func(t *testing.T) {
			db := bouncer.Open(t, d.driver, d.params)
			b, table := pgtest.NewBackendOn(t, db)
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					if err := b.Migrate(context.Background()); err != nil {
						t.Errorf("concurrent Migrate through pgbouncer: %v", err)
					}
				})
			}
			wg.Wait()
			for _, s := range hostile {
				roundTrip(t, b, s)
			}
			m := newManager(t, pgsession.Config{Backend: b})
			seed(t, table, time.Now(), 1500)
			var counts [3]int
			for i := range counts {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					n, ok, err := b.DeleteExpiredExclusive(ctx, backend.Cutoffs{Now: time.Now(), IdleBefore: time.Now().Add(-8 * time.Hour), CreatedBefore: time.Now().Add(-30 * 24 * time.Hour)}, 5000)
					if err != nil {
						t.Errorf("DeleteExpiredExclusive: %v", err)
					}
					if ok {
						counts[i] = n
					}
				})
			}
			wg.Wait()
			n, err := m.DeleteExpired(context.Background())
			if err != nil || counts[0]+counts[1]+counts[2]+n != 3000 {
				t.Errorf("removed %v then %d (%v), want 3,000 in all", counts, n, err)
			}
			if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != 1500 {
				t.Errorf("%d rows left, want 1,500", n)
			}
			if n := cleanupLocks(t, table); n != 0 {
				t.Errorf("%d cleanup locks left", n)
			}
		})
	}
}

// Load through PgBouncer in transaction mode with lib/pq, bare and in a
// hand-written driver wrapper (pgtest.WrappedPQ), in the default mode and
// with WithPreparedStatements: see pgtest.PoolerLoad. (otelsql's wrapper
// is tested in otelsql_test.go.)
func TestPgBouncerLoad(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for _, driver := range []string{"postgres", pgtest.WrappedPQ} {
		for name, opts := range map[string][]pgsession.PostgresOption{"default": nil, "prepared": {pgsession.WithPreparedStatements()}} {
			t.Run(driver+"/"+name, func(t *testing.T) {
				db := bouncer.Open(t, driver, "")
				db.SetMaxOpenConns(40) // more clients than PgBouncer's 10 server connections
				pgtest.PoolerLoad(t, admin, db, opts...)
			})
		}
	}
}
