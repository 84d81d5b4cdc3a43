// The system tests: pgsession under faults, failovers, outages, poolers,
// several instances and long soaks, on real PostgreSQL servers (throwaway
// clusters, proxies and PgBouncer that internal/pgtest starts), on lib/pq
// and pgx's stdlib alike; the tests that need pgx; and the benchmark of
// every driver mode. They are a module of their own, so that pgx and otelsql
// never enter the go.mod of a program that imports pgsession (which
// depends on lib/pq only).
package systemtest_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
	"github.com/pgsession/pgsession/pgstore"
)

// The backend works with any database/sql PostgreSQL driver: pgx's stdlib.
func TestPostgresBackendPgx(t *testing.T) {
	pgtest.Open(t, "pgx")
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackend(t, "pgx")
		return b
	})
}

// WithDriverPreparedStatements works with pgx too (database/sql's Stmt on
// pgx's connections).
func TestPostgresBackendPgxDriverPreparedStatements(t *testing.T) {
	pgtest.Open(t, "pgx")
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackend(t, "pgx", pgsession.WithDriverPreparedStatements())
		return b
	})
}

// pgx pool users hand the backend their *pgxpool.Pool through stdlib: the
// conformance suite passes, directly and (exec mode) through PgBouncer.
func TestPostgresBackendPgxPool(t *testing.T) {
	pgtest.Open(t, "pgx")
	bouncer := pgtest.NewPgBouncer(t)
	for name, url := range map[string]string{"direct": pgtest.URL(), "pgbouncer": bouncer.URL("default_query_exec_mode=exec")} {
		t.Run(name, func(t *testing.T) {
			db := openPgxPool(t, url)
			pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
				b, _ := pgtest.NewBackendOn(t, db)
				return b
			})
		})
	}
}

// The conformance suite passes through PgBouncer in transaction mode with
// pgx told not to rely on prepared statements.
func TestPostgresBackendPgBouncerPgxExec(t *testing.T) {
	pgtest.Open(t, "pgx")
	bouncer := pgtest.NewPgBouncer(t)
	db := bouncer.Open(t, "pgx", "default_query_exec_mode=exec")
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackendOn(t, db)
		return b
	})
}

// Through pgx too, a missing table is ErrNoTable with the advice, and a
// foreign one ErrSchemaMismatch (both read the SQLSTATE of pgx's errors).
func TestPgxErrorsAreExplained(t *testing.T) {
	db := pgtest.Open(t, "pgx")
	schema := pgtest.Schema(t, db)
	b := pgsession.NewPostgresBackend(db, pgsession.WithTable(schema+".sessions"))
	_, err := b.Load(context.Background(), randomID(), pgsession.SessionID{})
	if !errors.Is(err, pgstore.ErrNoTable) || !strings.Contains(err.Error(), "call Migrate") {
		t.Errorf("Load from a missing table = %v, want ErrNoTable with the advice", err)
	}
	if _, err := db.Exec(`CREATE TABLE ` + schema + `.sessions (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(context.Background(), randomID(), pgsession.SessionID{}); !errors.Is(err, pgstore.ErrSchemaMismatch) {
		t.Errorf("Load from scs's table = %v, want ErrSchemaMismatch", err)
	}
}

// Reads per second of each driver mode, direct and through PgBouncer in
// transaction mode, in one interleaved run (the README's figures):
//
//	go -C systemtest test -run '^$' -bench BenchmarkLoad -count 3 -cpu 8 -benchtime 2s
//
// "backend" rows are PostgresBackend.Load; "raw" rows run the same SELECT
// directly through database/sql for comparison with modes the backend does
// not use: lib/pq with binary_parameters=yes (parameters, one round trip)
// and a prepared statement (direct only: it is not safe behind a
// transaction pooler).
func BenchmarkLoad(b *testing.B) {
	pgtest.Open(b, "postgres")
	bouncer := pgtest.NewPgBouncer(b)
	direct := func(params string) string {
		if params == "" {
			return pgtest.URL()
		}
		return pgtest.URL() + "&" + params
	}
	type mode struct {
		name, driver, params string
		raw                  string // "", "params" or "prepared"
		directOnly           bool
	}
	modes := []mode{
		{name: "backend-libpq", driver: "postgres"},
		{name: "backend-pgx-exec", driver: "pgx", params: "default_query_exec_mode=exec"},
		{name: "backend-pgx-cache_statement", driver: "pgx", directOnly: true},
		{name: "raw-libpq-binary_parameters", driver: "postgres", params: "binary_parameters=yes", raw: "params"},
		{name: "raw-libpq-prepared", driver: "postgres", raw: "prepared", directOnly: true},
	}
	ids := make([]backend.ID, 1000)
	var table string
	{
		setup, err := sqlx.Open("postgres", direct(""))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = setup.Close() })
		var be *pgsession.PostgresBackend
		be, table = pgtest.NewBackendOn(b, setup)
		now := time.Now()
		for i := range ids {
			ids[i] = randomID()
			if err := be.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: ids[i], Created: now, Accessed: now}); err != nil {
				b.Fatal(err)
			}
		}
	}
	query := strings.ReplaceAll(`SELECT data, created_at, accessed_at FROM {t} WHERE key_hash = $1`, "{t}",
		`"`+strings.Replace(table, ".", `"."`, 1)+`"`)
	for _, target := range []string{"direct", "pgbouncer"} {
		for _, m := range modes {
			if m.directOnly && target == "pgbouncer" {
				continue
			}
			url := direct(m.params)
			if target == "pgbouncer" {
				url = bouncer.URL(m.params)
			}
			db, err := sqlx.Open(m.driver, url)
			if err != nil {
				b.Fatal(err)
			}
			db.SetMaxIdleConns(64)
			be := pgsession.NewPostgresBackend(db, pgsession.WithTable(table))
			var load func(id backend.ID) error
			switch m.raw {
			case "":
				load = func(id backend.ID) error {
					_, err := be.Load(context.Background(), id, pgsession.SessionID{})
					return err
				}
			case "params":
				load = func(id backend.ID) error { return scanLoad(db.QueryRowContext(context.Background(), query, id[:])) }
			case "prepared":
				st, err := db.Prepare(query)
				if err != nil {
					b.Fatal(err)
				}
				load = func(id backend.ID) error { return scanLoad(st.QueryRowContext(context.Background(), id[:])) }
			}
			b.Run(target+"/"+m.name, func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						i++
						if err := load(ids[i%len(ids)]); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
			})
			_ = db.Close()
		}
	}
}

func scanLoad(row *sql.Row) error {
	var data []byte
	var created, accessed time.Time
	return row.Scan(&data, &created, &accessed)
}
