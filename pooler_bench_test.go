package pgsession_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// Reads per second of each driver mode, direct and through PgBouncer in
// transaction mode, in one interleaved run (the README's figures):
//
//	go test -run '^$' -bench BenchmarkLoad -count 3 -cpu 8 -benchtime 2s
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
	ids := make([]pgsession.ID, 1000)
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
			if err := be.Apply(context.Background(), pgsession.Action{Op: pgsession.OpInsert, New: ids[i], Created: now, Accessed: now}); err != nil {
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
			var load func(id pgsession.ID) error
			switch m.raw {
			case "":
				load = func(id pgsession.ID) error { _, err := be.Load(context.Background(), id); return err }
			case "params":
				load = func(id pgsession.ID) error { return scanLoad(db.QueryRowContext(context.Background(), query, id[:])) }
			case "prepared":
				st, err := db.Prepare(query)
				if err != nil {
					b.Fatal(err)
				}
				load = func(id pgsession.ID) error { return scanLoad(st.QueryRowContext(context.Background(), id[:])) }
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
