package systemtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// stuckApp serves a session counter on a pool of its own (named app), so a
// test can block its statements with locks taken through admin and see them
// in pg_stat_activity. ?op=write increments "n", ?op=rotate also rotates the
// key, ?op=logout clears the session.
type stuckApp struct {
	admin  *sqlx.DB
	table  string
	app    string
	m      *pgsession.Manager
	srv    *httptest.Server
	panics atomic.Int64
}

func newStuckApp(t *testing.T, timeout time.Duration) *stuckApp {
	t.Helper()
	a := &stuckApp{admin: pgtest.Open(t, "postgres")}
	a.table = pgtest.Schema(t, a.admin) + ".sessions"
	var db *sqlx.DB
	db, a.app = openPool(t, "pgsession_stuck_")
	b := pgsession.NewPostgresBackend(db, pgsession.WithTable(a.table), pgsession.WithQueryTimeout(timeout))
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.m = newManager(t, pgsession.Config{Backend: b, Cookie: pgsession.CookieConfig{Insecure: true}})
	h := a.m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var n int
		_, _ = s.Get("n", &n)
		switch r.URL.Query().Get("op") {
		case "write":
			_ = s.Set("n", n+1)
		case "rotate":
			_ = s.Set("n", n+1)
			_ = pgsession.RotateKey(r.Context())
		case "logout":
			_ = s.Clear()
		}
		fmt.Fprint(w, n)
	}))
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				a.panics.Add(1)
				panic(v)
			}
		}()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		a.srv.Close()
		if n := a.panics.Load(); n != 0 {
			t.Errorf("%d panics while serving", n)
		}
	})
	return a
}

// do makes a request with op and cookie (the session cookie's name=value,
// or ""), returning the status and the new session cookie, if any.
func (a *stuckApp) do(ctx context.Context, op, cookie string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.srv.URL+"/?op="+op, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	for _, c := range resp.Cookies() {
		if c.Name == pgsession.DefaultCookieName && c.Value != "" {
			cookie = c.Name + "=" + c.Value
		}
	}
	return resp.StatusCode, cookie, nil
}

// login creates a session holding n=1 and returns its cookie.
func (a *stuckApp) login(t *testing.T) string {
	t.Helper()
	code, cookie, err := a.do(context.Background(), "write", "")
	if err != nil || code != http.StatusOK || cookie == "" {
		t.Fatalf("login: %d %q %v", code, cookie, err)
	}
	return cookie
}

// rows returns the table's rows as "key_hash:n" strings, sorted.
func (a *stuckApp) rows(t *testing.T) []string {
	t.Helper()
	var rows []string
	if err := a.admin.Select(&rows, `SELECT encode(key_hash, 'hex') || ':' || coalesce(data->>'n', '-') FROM `+a.table+` ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	return rows
}

// waiting counts the app's statements waiting for a lock.
func (a *stuckApp) waiting(t *testing.T) int {
	t.Helper()
	return pgtest.Count(t, a.admin, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, a.app)
}

// block takes a lock that makes the app's statements for op wait, held
// until the returned function is called: the session rows FOR UPDATE for
// writes, the table in SHARE mode for inserts, ACCESS EXCLUSIVE for loads.
func (a *stuckApp) block(t *testing.T, what string) (release func()) {
	t.Helper()
	tx, err := a.admin.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	stmt := map[string]string{
		"rows":   "SELECT 1 FROM " + a.table + " FOR UPDATE",
		"insert": "LOCK TABLE " + a.table + " IN SHARE MODE",
		"load":   "LOCK TABLE " + a.table + " IN ACCESS EXCLUSIVE MODE",
	}[what]
	if _, err := tx.Exec(stmt); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Rollback()
		}
	}
	t.Cleanup(release)
	return release
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The client goes away while its save is running in PostgreSQL (the
// statement waits for a lock): the statement is cancelled in the server, no
// part of the change is written, nothing panics, and the next request works.
func TestClientGoneMidSave(t *testing.T) {
	for _, tc := range []struct {
		op, lock string
		fresh    bool // a request without a session: the save is an insert
	}{
		{op: "write", lock: "rows"},
		{op: "rotate", lock: "rows"},
		{op: "logout", lock: "rows"},
		{op: "write", lock: "insert", fresh: true},
	} {
		t.Run(tc.op+"/"+tc.lock, func(t *testing.T) {
			a := newStuckApp(t, 30*time.Second) // cancellation, not the timeout, must end the statement
			cookie := ""
			if !tc.fresh {
				cookie = a.login(t)
			}
			before := a.rows(t)
			release := a.block(t, tc.lock)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { _, _, err := a.do(ctx, tc.op, cookie); done <- err }()
			eventually(t, "the save to wait for the lock", func() bool { return a.waiting(t) > 0 })
			cancel() // the client disconnects
			if err := <-done; err == nil {
				t.Fatal("the cancelled request succeeded")
			}
			// The server gives up the save and cancels the statement in
			// PostgreSQL while the lock is still held.
			eventually(t, "the failed save", func() bool { return a.m.Stats().Errors == 1 })
			eventually(t, "the statement to be cancelled", func() bool { return a.waiting(t) == 0 })
			release()
			time.Sleep(100 * time.Millisecond) // a statement still queued would now apply
			if after := a.rows(t); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("rows changed by a cancelled save: %v, before %v", after, before)
			}
			if code, _, err := a.do(context.Background(), tc.op, cookie); err != nil || code != http.StatusOK {
				t.Errorf("next request: %d %v", code, err)
			}
		})
	}
}

// PostgreSQL kills the connection of a statement in flight (here waiting
// for a lock). lib/pq reports the dead connection as driver.ErrBadConn, so
// database/sql runs the statement again on a fresh connection: once the lock
// goes, the request succeeds with its change applied exactly once. When every
// attempt is killed, database/sql gives up after three and the request gets
// the ErrorHandler's 500, with nothing written. Nothing hangs either way.
func TestConnectionKilledMidStatement(t *testing.T) {
	for _, tc := range []struct {
		op, lock string
		want     []string // the values of n stored after the request
		sameKey  bool     // the row keeps its key
	}{
		{op: "read", lock: "load", want: []string{"1"}, sameKey: true}, // stuck in the load
		{op: "write", lock: "rows", want: []string{"2"}, sameKey: true},
		{op: "rotate", lock: "rows", want: []string{"2"}},
		{op: "logout", lock: "rows", want: nil},
		{op: "write", lock: "insert", want: []string{"1"}}, // a new session
	} {
		t.Run(tc.op+"/"+tc.lock, func(t *testing.T) {
			start := func(t *testing.T) (a *stuckApp, before []string, release func(), done chan int) {
				a = newStuckApp(t, 30*time.Second) // the kills, not the timeout, must end each attempt
				cookie := ""
				if tc.lock != "insert" {
					cookie = a.login(t)
				}
				before = a.rows(t)
				release = a.block(t, tc.lock)
				done = make(chan int, 1)
				go func() {
					code, _, err := a.do(context.Background(), tc.op, cookie)
					if err != nil {
						t.Errorf("request: %v", err)
					}
					done <- code
				}()
				return a, before, release, done
			}
			t.Run("retried", func(t *testing.T) {
				a, before, release, done := start(t)
				pid := a.waitingPID(t, 0)
				a.kill(t)
				a.waitingPID(t, pid) // database/sql's retry, on a new connection
				release()
				if code := <-done; code != http.StatusOK {
					t.Fatalf("retried request: status %d", code)
				}
				after := a.rows(t)
				var ns []string
				for _, r := range after {
					ns = append(ns, r[strings.IndexByte(r, ':')+1:])
				}
				if strings.Join(ns, ",") != strings.Join(tc.want, ",") ||
					tc.sameKey && len(after) > 0 && len(before) > 0 && after[0][:64] != before[0][:64] ||
					!tc.sameKey && len(after) > 0 && len(before) > 0 && after[0][:64] == before[0][:64] {
					t.Errorf("rows %v after a retried %s, before %v; want n = %v applied once", after, tc.op, before, tc.want)
				}
			})
			t.Run("killed every time", func(t *testing.T) {
				a, before, release, done := start(t)
				kills, pid := 0, 0
				for {
					select {
					case code := <-done:
						if code != http.StatusInternalServerError {
							t.Errorf("status %d after %d kills, want the ErrorHandler's 500", code, kills)
						}
						t.Logf("gave up after %d kills", kills)
						release()
						if after := a.rows(t); strings.Join(after, ",") != strings.Join(before, ",") {
							t.Errorf("rows changed by killed statements: %v, before %v", after, before)
						}
						return
					case <-time.After(5 * time.Millisecond):
					}
					if p := a.waitingPIDNow(t); p != 0 && p != pid {
						pid = p
						a.kill(t)
						kills++
					}
					if kills > 10 {
						t.Fatal("the request keeps retrying")
					}
				}
			})
		})
	}
}

// waitingPIDNow returns the server pid of the app's statement waiting for a
// lock, or 0.
func (a *stuckApp) waitingPIDNow(t *testing.T) int {
	t.Helper()
	return pgtest.Count(t, a.admin, `SELECT max(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, a.app)
}

// waitingPID waits until a statement of the app other than the one on pid
// not waits for a lock, and returns its pid.
func (a *stuckApp) waitingPID(t *testing.T, not int) int {
	t.Helper()
	var pid int
	eventually(t, "a statement waiting for the lock", func() bool {
		pid = a.waitingPIDNow(t)
		return pid != 0 && pid != not
	})
	return pid
}

// kill terminates every server connection of the app.
func (a *stuckApp) kill(t *testing.T) {
	t.Helper()
	pgtest.Count(t, a.admin, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, a.app)
}

// WithQueryTimeout fails a request stuck in its load or its save within the
// timeout, with the ErrorHandler's 500, and the stuck statement is cancelled
// in the server rather than left behind.
func TestQueryTimeoutBoundsLoadAndSave(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct{ op, lock string }{{"read", "load"}, {"write", "rows"}, {"rotate", "rows"}} {
		t.Run(tc.op, func(t *testing.T) {
			a := newStuckApp(t, timeout)
			cookie := a.login(t)
			before := a.rows(t)
			release := a.block(t, tc.lock)
			start := time.Now()
			code, _, err := a.do(context.Background(), tc.op, cookie)
			took := time.Since(start)
			if err != nil || code != http.StatusInternalServerError {
				t.Errorf("stuck request: %d %v, want 500", code, err)
			}
			if took < timeout || took > timeout+2*time.Second {
				t.Errorf("stuck request failed after %v, want just over %v", took, timeout)
			}
			eventually(t, "the stuck statement to be cancelled", func() bool { return a.waiting(t) == 0 })
			release()
			if after := a.rows(t); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("rows changed by a timed-out request: %v, before %v", after, before)
			}
			if code, _, err := a.do(context.Background(), tc.op, cookie); err != nil || code != http.StatusOK {
				t.Errorf("after the lock was released: %d %v", code, err)
			}
		})
	}
}
