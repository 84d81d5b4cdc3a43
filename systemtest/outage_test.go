package systemtest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// counterApp serves a handler that increments "n" in the session, over a
// real server with a PostgreSQL backend on db.
type counterApp struct {
	srv     *httptest.Server
	cookies []string
}

func newCounterApp(t *testing.T, db *sqlx.DB, table string, sessions int, opts ...pgsession.PostgresOption) *counterApp {
	t.Helper()
	b := pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
		Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a := &counterApp{srv: httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var n int
		if _, err := s.Get("n", &n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Query().Has("write") {
			_ = s.Set("n", n+1)
		}
		fmt.Fprint(w, n)
	})))}
	t.Cleanup(a.srv.Close)
	for range sessions {
		resp, err := a.srv.Client().Get(a.srv.URL + "/?write")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		a.cookies = append(a.cookies, resp.Header.Get("Set-Cookie"))
	}
	return a
}

// get makes one request with session i and returns the status (0 when the
// request itself failed).
func (a *counterApp) get(i int, write bool) int {
	req, _ := http.NewRequest(http.MethodGet, a.srv.URL+"/", nil)
	if write {
		req.URL.RawQuery = "write"
	}
	req.Header.Set("Cookie", strings.SplitN(a.cookies[i%len(a.cookies)], ";", 2)[0])
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// startLoad runs a.load(workers) in the background. The returned stop ends
// the load and returns the statuses seen; it is also called when t ends, so
// a test that fails midway never leaves load running (nor the server's
// Close waiting for it).
func (a *counterApp) startLoad(t *testing.T, workers int) (stop func() map[int]int) {
	done := make(chan struct{})
	seen := make(chan map[int]int, 1)
	go func() { seen <- a.load(workers, done) }()
	var once sync.Once
	var statuses map[int]int
	stop = func() map[int]int {
		once.Do(func() {
			close(done)
			statuses = <-seen
		})
		return statuses
	}
	t.Cleanup(func() { stop() })
	return stop
}

// load runs workers until stop is closed and returns the statuses seen.
func (a *counterApp) load(workers int, stop <-chan struct{}) map[int]int {
	var mu sync.Mutex
	seen := map[int]int{}
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code := a.get(i, n.Add(1)%2 == 0)
				mu.Lock()
				seen[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return seen
}

// recovers waits until requests succeed again, then requires that the next
// ones all do.
func (a *counterApp) recovers(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for a.get(0, true) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("service did not recover within %v", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 50 {
		if code := a.get(i, i%2 == 0); code != http.StatusOK {
			t.Fatalf("request %d after recovery: %d", i, code)
		}
	}
}

// goroutinesSettle fails t unless the goroutine count comes back near base.
func goroutinesSettle(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+10 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, started with %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The server kills the pool's connections mid-load: requests fail with the
// ErrorHandler's 500 at worst, nothing panics, and service resumes by itself.
func TestOutageTerminatedConnections(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, admin) + ".sessions"
	base := runtime.NumGoroutine()
	app := randomName("pgsession_outage_")
	db, err := sqlx.Open("postgres", withApp(pgtest.URL(), app))
	if err != nil {
		t.Fatal(err)
	}
	a := newCounterApp(t, db, table, 20)

	stop := a.startLoad(t, 8)
	killed := 0
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		killed += pgtest.Count(t, admin, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app)
	}
	statuses := stop()
	t.Logf("terminated %d connections; statuses under load: %v", killed, statuses)
	if killed == 0 {
		t.Fatal("no connection was terminated: the test did not test anything")
	}
	for code := range statuses {
		if code != http.StatusOK && code != http.StatusInternalServerError {
			t.Errorf("status %d under outage (count %d), want only 200 or 500", code, statuses[code])
		}
	}
	a.recovers(t, 10*time.Second)
	a.srv.Close()
	db.Close()
	goroutinesSettle(t, base)
}

// The whole server stops and starts again mid-load.
func TestOutageServerRestart(t *testing.T) {
	c := pgtest.NewCluster(t)
	base := runtime.NumGoroutine()
	db, err := sqlx.Open("postgres", c.URL("pgsession_restart"))
	if err != nil {
		t.Fatal(err)
	}
	a := newCounterApp(t, db, "sessions", 10, pgsession.WithQueryTimeout(2*time.Second))

	stop := a.startLoad(t, 4)
	time.Sleep(200 * time.Millisecond)
	c.Stop()
	time.Sleep(300 * time.Millisecond)
	down := a.get(0, false)
	c.Start()
	time.Sleep(200 * time.Millisecond)
	statuses := stop()
	t.Logf("statuses across the restart: %v", statuses)
	if down != http.StatusInternalServerError {
		t.Errorf("with the server down: status %d, want the ErrorHandler's 500", down)
	}
	for code := range statuses {
		if code != http.StatusOK && code != http.StatusInternalServerError {
			t.Errorf("status %d across the restart, want only 200 or 500", code)
		}
	}
	a.recovers(t, 15*time.Second)
	a.srv.Close()
	db.Close()
	goroutinesSettle(t, base)
}

// A request whose context ends before the save writes nothing at all.
func TestCancelledSaveWritesNothing(t *testing.T) {
	b, _ := pgtest.NewBackend(t, "postgres")
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: b})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := env.Manager.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		_ = s.Set("a", 2)
		_ = s.Set("b", 3)
		cancel() // the client goes away before the response starts
		fmt.Fprint(w, "done")
	}))
	req := env.Request(t, httptest.NewRequestWithContext(ctx, http.MethodPost, "/", nil), map[string]any{"a": 1})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	// The save is skipped, not failed: no write, no cookie, no error.
	if rec.Header().Get("Set-Cookie") != "" || env.Manager.Stats().Errors != 0 {
		t.Errorf("Set-Cookie %q, stats %+v; want no cookie and no error", rec.Header().Get("Set-Cookie"), env.Manager.Stats())
	}
	saved := env.Saved(t, req, rec.Result())
	if len(saved) != 1 || string(saved["a"]) != "1" {
		t.Errorf("stored %s, want the untouched {a:1}", saved)
	}
}

// WithQueryTimeout fails a request whose statement is stuck (here behind a
// row lock) instead of hanging it.
func TestQueryTimeout(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, db) + ".sessions"
	a := newCounterApp(t, db, table, 1, pgsession.WithQueryTimeout(200*time.Millisecond))
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("SELECT 1 FROM " + table + " FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- a.get(0, true) }() // the UPDATE waits for the lock
	select {
	case code := <-done:
		if code != http.StatusInternalServerError {
			t.Errorf("stuck save: status %d, want 500", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request hung despite WithQueryTimeout")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if code := a.get(0, true); code != http.StatusOK {
		t.Errorf("after the lock was released: %d", code)
	}
}

// A timed-out call says which phase the deadline hit: the wait for a pool
// connection, or the statement. Either way the error wraps the context's,
// and a write whose outcome is unknown is never reported as done.
func TestQueryTimeoutSaysWhere(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, admin) + ".sessions"
	db, _ := openPool(t, "pgsession_timeout_")
	db.SetMaxOpenConns(1)
	b := pgsession.NewPostgresBackend(db, pgsession.WithTable(table), pgsession.WithQueryTimeout(200*time.Millisecond))
	ctx := context.Background()
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	id := randomID()
	now := time.Now()
	if err := b.Apply(ctx, backend.Action{Op: backend.OpInsert, New: id, Created: now, Accessed: now}); err != nil {
		t.Fatal(err)
	}

	conn, err := db.Conn(ctx) // the pool's only connection
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Load(ctx, id, pgsession.SessionID{})
	conn.Close()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no pool connection") {
		t.Errorf("Load with the pool exhausted: %v; want a deadline error naming the pool", err)
	}

	tx, err := admin.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("SELECT 1 FROM " + table + " FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	err = b.Apply(ctx, backend.Action{Op: backend.OpRotate, Old: id, New: randomID(), Created: now, Accessed: now})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "outcome is unknown") || errors.Is(err, backend.ErrGone) {
		t.Errorf("rotation stuck behind a row lock: %v; want a deadline error naming the statement", err)
	}
	_ = tx.Rollback()
	// The pool recovers: the cancelled statement's connection serves again
	// (polled, so that a loaded machine's slow statement is not a failure).
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err := b.Load(ctx, id, pgsession.SessionID{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the lock was released: %v", err)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}
