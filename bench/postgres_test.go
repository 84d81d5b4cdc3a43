package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jmoiron/sqlx"
)

// The Go side of a read request on a real PostgreSQL (at $DATABASE_URL, or
// the local server): the same /read route as the Fixed benchmarks, with the
// driver, database/sql and the round trip included. Under callgrind
// ("-insn") the count is of this process's instructions only: the
// database's work is not in it.

// pgEnv returns a pool on the benchmark database and a table name in a
// schema of its own, dropped when b ends.
func pgEnv(b *testing.B) env {
	url := envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		_ = db.Close()
		b.Skipf("no PostgreSQL at %s: %v", url, err)
	}
	schema := createSchema(b, db)
	b.Cleanup(func() {
		_, _ = db.Exec("DROP SCHEMA " + schema + " CASCADE")
		_ = db.Close()
	})
	return env{db: db, table: schema + ".sessions"}
}

// pgRead builds the implementation named name on PostgreSQL and returns
// its handler and the cookie of a session holding n=1.
func pgRead(b *testing.B, name string) (http.Handler, string) {
	sp, ok := specByName(name)
	if !ok {
		b.Fatalf("no implementation %q", name)
	}
	im, err := sp.build(context.Background(), pgEnv(b))
	if err != nil {
		b.Fatal(err)
	}
	cookie := serveCookie(b, im.handler, sp.cookie, "/write", "")
	if cookie == "" {
		b.Fatalf("/write set no cookie %s", sp.cookie)
	}
	return im.handler, cookie
}

// createSchema creates a schema of a random name in db and returns its
// name; the caller drops it.
func createSchema(tb testing.TB, db *sqlx.DB) string {
	tb.Helper()
	schema := newSchemaName()
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		tb.Fatal(err)
	}
	return schema
}

// serveCookie serves GET path through h with cookie ("name=value", or ""
// for none), requires a 200, and returns the cookie named name that the
// response sets ("name=value"), or "" if it sets none.
func serveCookie(tb testing.TB, h http.Handler, name, path, cookie string) string {
	tb.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("%s: status %d: %q", path, rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == name {
			return c.Name + "=" + c.Value
		}
	}
	return ""
}

func BenchmarkReadPostgres(b *testing.B) {
	for _, c := range []struct{ name, want string }{
		{"pgsession", "1"},
		{"pgsession-prepared", "1"},
		{"pgsession-driver", "1"},
		{"floor", "1"},
		{"floor-strict", `{"n": 1}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			h, cookie := pgRead(b, c.name)
			benchRead(b, h, cookie, c.want)
		})
	}
}

// BenchmarkWritePostgres is /write (a read and an increment of the counter)
// on PostgreSQL, as BenchmarkReadPostgres.
func BenchmarkWritePostgres(b *testing.B) {
	for _, name := range []string{recommendedDirect, "pgsession-prepared", "floor"} {
		b.Run(name, func(b *testing.B) {
			h, cookie := pgRead(b, name)
			benchRoute(b, h, "/write", cookie, "") // the counter grows: any body
		})
	}
}

// BenchmarkLoginPostgres is /login (a user stored and the key rotated) on
// PostgreSQL, each request with the cookie the previous one set.
func BenchmarkLoginPostgres(b *testing.B) {
	for _, name := range []string{recommendedDirect, "floor"} {
		b.Run(name, func(b *testing.B) {
			h, cookie := pgRead(b, name)
			b.ReportAllocs()
			for b.Loop() {
				ctx, cancel := context.WithCancel(context.Background())
				req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/login", nil)
				req.Header.Set("Cookie", cookie)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				cancel()
				cookies := rec.Result().Cookies()
				if rec.Code != http.StatusOK || len(cookies) == 0 {
					b.Fatalf("status %d, cookies %v: %q", rec.Code, cookies, rec.Body)
				}
				cookie = cookies[0].Name + "=" + cookies[0].Value
			}
		})
	}
}
