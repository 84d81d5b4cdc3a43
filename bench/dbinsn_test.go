package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/internal/pgtest"
)

// TestDatabaseInstructions counts what PostgreSQL executes for one request
// of each workload (-v prints the table), the database's side of the Go
// side's instruction counts of -insn: a throwaway server runs under
// valgrind --tool=callgrind, the app holds one connection, so one backend
// process serves all its statements, and the count is that process's
// instructions for two numbers of requests, differenced, so the
// connection's start, the schema and the sessions' creation cancel out.
// Each request of a run names a session of its own (created before), as
// under the load benchmark, rather than rewriting one row. Kernel time
// (the socket, the WAL's writes) is not counted; fsync and autovacuum are
// off.
//
// It runs only with BENCH_DB_INSN=1 (about five minutes):
//
//	BENCH_DB_INSN=1 go test -run DatabaseInstructions -v .
func TestDatabaseInstructions(t *testing.T) {
	if os.Getenv("BENCH_DB_INSN") == "" {
		t.Skip("set BENCH_DB_INSN=1 to count PostgreSQL's instructions per request (valgrind, about five minutes)")
	}
	out, err := os.MkdirTemp("", "pgsession-bench-dbinsn-") // not t.TempDir: the server's user writes it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(out) })
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres", out).Run(); err != nil {
			t.Fatal(err)
		}
	}
	c := pgtest.NewCallgrindCluster(t, out, "autovacuum=off")
	url := c.URL("bench-insn")
	const short, long = 200, 1200
	for _, tc := range []struct{ workload, impl string }{
		{"read", recommendedDirect}, {"read", "floor"}, {"read", "floor-strict"},
		{"write", recommendedDirect}, {"write", "floor"},
		{"login", recommendedDirect}, {"login", "floor"},
	} {
		var total [2]int64
		for i, n := range []int{short, long} {
			total[i] = databaseRun(t, url, out, tc.impl, tc.workload, n, long)
		}
		t.Logf("%-6s %-14s %9.0f PostgreSQL instructions/request", tc.workload, tc.impl, float64(total[1]-total[0])/(long-short))
	}
}

// databaseRun builds impl on a pool of one connection to url, creates
// sessions sessions through it, serves n requests of workload, each on a
// session of its own, and returns the connection's backend's instructions.
func databaseRun(t *testing.T, url, out, impl, workload string, n, sessions int) int64 {
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
	var id [6]byte
	_, _ = rand.Read(id[:])
	schema := "bench_" + hex.EncodeToString(id[:])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	sp, ok := specByName(impl)
	if !ok {
		t.Fatalf("no implementation %q", impl)
	}
	im, err := sp.build(ctx, env{db: db, table: schema + ".sessions"})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(path, cookie string) string {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		rec := httptest.NewRecorder()
		im.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: status %d: %q", impl, path, rec.Code, rec.Body)
		}
		for _, c := range rec.Result().Cookies() {
			if c.Name == sp.cookie {
				return c.Name + "=" + c.Value
			}
		}
		return cookie
	}
	cookies := make([]string, sessions)
	for i := range cookies {
		cookies[i] = serve("/write", "")
	}
	for _, cookie := range cookies[:n] {
		serve("/"+workload, cookie)
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
