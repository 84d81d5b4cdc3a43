package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/internal/pgtest"
)

// BenchmarkDatabaseInstructions counts what PostgreSQL executes for one
// request of each workload (metric pg-insn/req), the database's side of
// the Go side's instruction counts (-insn): a throwaway server runs under
// valgrind --tool=callgrind, the app holds one connection, so one backend
// process serves all its statements, and the count is that process's
// instructions for two numbers of requests, differenced, so the
// connection's start, the schema and the sessions' creation cancel out.
// Each request names a session of its own (created before), as under the
// load benchmark, rather than rewriting one row. Kernel time (the socket,
// the WAL's writes) is not counted; fsync and autovacuum are off. It takes
// about two minutes, whatever -benchtime says:
//
//	go test -run '^$' -bench DatabaseInstructions -benchtime 1x .
func BenchmarkDatabaseInstructions(b *testing.B) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		b.Skip("needs valgrind (apt-get install valgrind)")
	}
	out, err := os.MkdirTemp("", "pgsession-bench-dbinsn-") // not b.TempDir: the server's user writes it
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(out) })
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres", out).Run(); err != nil {
			b.Fatal(err)
		}
	}
	c := pgtest.NewCallgrindCluster(b, out, "autovacuum=off")
	url := c.URL("bench-insn")
	const short, long = 200, 1200
	for _, tc := range []struct{ workload, impl string }{
		{"read", recommendedDirect}, {"read", "floor"}, {"read", "floor-strict"},
		{"write", recommendedDirect}, {"write", "floor"},
		{"login", recommendedDirect}, {"login", "floor"},
	} {
		b.Run(tc.workload+"/"+tc.impl, func(b *testing.B) {
			var total [2]int64
			for i, n := range []int{short, long} {
				total[i] = databaseRun(b, url, out, tc.impl, tc.workload, n, long)
			}
			for b.Loop() { // the count above is the measurement; the loop only satisfies the framework
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(total[1]-total[0])/(long-short), "pg-insn/req")
		})
	}
}

// databaseRun builds impl on a pool of one connection to url, creates
// sessions sessions through it, serves n requests of workload, each on a
// session of its own, and returns the connection's backend's instructions.
func databaseRun(t testing.TB, url, out, impl, workload string, n, sessions int) int64 {
	t.Helper()
	ctx := context.Background()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	var pid int
	if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	schema := createSchema(t, db)
	sp, ok := specByName(impl)
	if !ok {
		t.Fatalf("no implementation %q", impl)
	}
	im, err := sp.build(ctx, env{db: db, table: schema + ".sessions"})
	if err != nil {
		t.Fatal(err)
	}
	cookies := make([]string, sessions)
	for i := range cookies {
		if cookies[i] = serveCookie(t, im.handler, sp.cookie, "/write", ""); cookies[i] == "" {
			t.Fatalf("%s: /write set no cookie %s", impl, sp.cookie)
		}
	}
	for _, cookie := range cookies[:n] {
		serveCookie(t, im.handler, sp.cookie, "/"+workload, cookie)
	}
	if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	total, err := pgtest.CallgrindTotal(out, pid, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return total
}
