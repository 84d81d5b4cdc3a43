package pgsession_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// The middleware applied twice to one handler (globally and again on a
// route group, a common accident) must behave as if applied once: the inner
// one passes the request through to the outer one's session. These tests
// run a login with RotateKey, a data write, a streamed response and a
// logout through a real HTTP server, on memory and on PostgreSQL, and
// compare every response, every Set-Cookie header and every stored row with
// the same steps through a single middleware.

// liveRows wraps a Backend and counts what the middleware asks of it: loads,
// writes, and the rows that exist (tracked from the actions, so it works for
// any backend).
type liveRows struct {
	backend.Backend

	mu      sync.Mutex
	loads   int
	applies int
	live    map[backend.ID]bool
}

func newLiveRows(b backend.Backend) *liveRows {
	return &liveRows{Backend: b, live: map[backend.ID]bool{}}
}

func (b *liveRows) Load(ctx context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	b.mu.Lock()
	b.loads++
	b.mu.Unlock()
	return b.Backend.Load(ctx, id, sid)
}

func (b *liveRows) Apply(ctx context.Context, a backend.Action) error {
	if err := b.Backend.Apply(ctx, a); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applies++
	switch a.Op {
	case backend.OpInsert, backend.OpRotate:
		delete(b.live, a.Old)
		b.live[a.New] = true
	case backend.OpDelete:
		delete(b.live, a.Old)
	}
	return nil
}

// counts returns the loads and writes so far and the rows that exist.
func (b *liveRows) counts() (loads, applies, rows int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.loads, b.applies, len(b.live)
}

// doubleApp is the handler under test: login (with RotateKey), a counter
// write, a streamed response that blocks after its first flushed event
// until the client has read it, logout, and a page showing the session.
func doubleApp(t *testing.T, m *pgsession.Manager, release <-chan struct{}) http.Handler {
	// session returns m's session, failing the test unless it is the one
	// session of the request (the inner middleware added none of its own).
	session := func(r *http.Request) *pgsession.Session {
		s := m.FromContext(r.Context())
		if s == nil {
			t.Errorf("%s %s: no session of m", r.Method, r.URL.Path)
		}
		return s
	}
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		t.Errorf("%s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		if err := errors.Join(s.Set("user", "ada"), pgsession.RotateKey(r.Context())); err != nil {
			fail(w, r, err)
			return
		}
		fmt.Fprint(w, "logged in")
	})
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		var n int
		_, err := s.Get("n", &n)
		if err = errors.Join(err, s.Set("n", n+1)); err != nil {
			fail(w, r, err)
			return
		}
		fmt.Fprintf(w, "n=%d", n+1)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		if err := s.Set("streamed", true); err != nil {
			fail(w, r, err)
			return
		}
		fmt.Fprint(w, "event 1\n")
		w.(http.Flusher).Flush() // saves the session; the cookie leaves now
		select {
		case <-release: // the client read event 1: the flush went through both wrappers
		case <-time.After(10 * time.Second):
			t.Errorf("GET /stream: the client did not read the first event; the flush did not reach it")
			return
		}
		var user string
		if _, err := s.Get("user", &user); err != nil {
			fail(w, r, err)
			return
		}
		fmt.Fprintf(w, "event 2 for %s\n", user)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := session(r).Clear(); err != nil {
			fail(w, r, err)
			return
		}
		fmt.Fprint(w, "logged out")
	})
	mux.HandleFunc("GET /show", func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		out := map[string]any{}
		for _, k := range s.Keys() {
			var v any
			_, _ = s.Get(k, &v)
			out[k] = v
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// step is what one request of the scenario saw.
type step struct {
	Request    string
	Status     int
	Body       string
	SetCookies int // Set-Cookie headers on the response
	Loads      int // backend loads during the request
	Applies    int // backend writes during the request
	Rows       int // rows stored after it
}

// wrappings returns the ways the scenario wraps doubleApp in m's middleware,
// with the path prefix its routes then have. other is a second Manager with
// a cookie of its own.
func wrappings(m, other *pgsession.Manager) map[string]struct {
	prefix string
	wrap   func(http.Handler) http.Handler
} {
	type wrapping = struct {
		prefix string
		wrap   func(http.Handler) http.Handler
	}
	return map[string]wrapping{
		"once": {"", m.Middleware},
		"twice": {"", func(h http.Handler) http.Handler {
			return m.Middleware(m.Middleware(h))
		}},
		// As with chi's r.Use at the top and again in r.Route("/app", ...).
		"globally and on a route group": {"/app", func(h http.Handler) http.Handler {
			root := http.NewServeMux()
			root.Handle("/app/", http.StripPrefix("/app", m.Middleware(h)))
			root.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "home") })
			return m.Middleware(root)
		}},
		"twice, another Manager between": {"", func(h http.Handler) http.Handler {
			return m.Middleware(other.Middleware(m.Middleware(h)))
		}},
	}
}

// runScenario serves handler over HTTPS and runs the steps as one browser
// (a cookie jar) would: login, write, stream, show, logout, show.
func runScenario(t *testing.T, prefix string, handler http.Handler, b *liveRows, release chan struct{}, sqlRows func() int) []step {
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Jar, _ = cookiejar.New(nil)
	var steps []step
	do := func(method, path string) {
		t.Helper()
		loads0, applies0, _ := b.counts()
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+prefix+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var body strings.Builder
		if path == "/stream" {
			// Read the first event before the handler writes the next one.
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			body.WriteString(first)
			close(release)
			rest, _ := io.ReadAll(br)
			body.Write(rest)
		} else {
			rest, _ := io.ReadAll(resp.Body)
			body.Write(rest)
		}
		loads, applies, rows := b.counts()
		if sqlRows != nil {
			if n := sqlRows(); n != rows {
				t.Errorf("%s %s: %d rows in the table, %d by the actions", method, path, n, rows)
			}
		}
		steps = append(steps, step{
			Request: method + " " + path, Status: resp.StatusCode, Body: body.String(),
			SetCookies: len(resp.Header.Values("Set-Cookie")),
			Loads:      loads - loads0, Applies: applies - applies0, Rows: rows,
		})
	}
	do(http.MethodPost, "/login")
	do(http.MethodPost, "/write")
	do(http.MethodPost, "/write")
	do(http.MethodGet, "/stream")
	do(http.MethodGet, "/show")
	do(http.MethodPost, "/logout")
	do(http.MethodGet, "/show")
	return steps
}

func TestDoubleMiddleware(t *testing.T) {
	backends := map[string]func(t *testing.T) (backend.Backend, func() int){
		"memory": func(*testing.T) (backend.Backend, func() int) { return pgsession.NewMemoryBackend(), nil },
		"postgres": func(t *testing.T) (backend.Backend, func() int) {
			b, table := pgtest.NewBackend(t, "postgres")
			db := pgtest.Open(t, "postgres")
			return b, func() int { return pgtest.Count(t, db, "SELECT count(*) FROM "+table) }
		},
	}
	for bname, newBackend := range backends {
		t.Run(bname, func(t *testing.T) {
			t.Parallel()
			// The single middleware's transcript is the reference.
			var want []step
			for _, name := range []string{"once", "twice", "globally and on a route group", "twice, another Manager between"} {
				t.Run(name, func(t *testing.T) {
					backend, sqlRows := newBackend(t)
					b := newLiveRows(backend)
					m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{[]byte("double middleware test hash key, 32+ bytes")}})
					if err != nil {
						t.Fatal(err)
					}
					other, err := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{[]byte("the other Manager's hash key, 32+ bytes")},
						Cookie: pgsession.CookieConfig{Name: "prefs"}})
					if err != nil {
						t.Fatal(err)
					}
					w := wrappings(m, other)[name]
					release := make(chan struct{})
					got := runScenario(t, w.prefix, w.wrap(doubleApp(t, m, release)), b, release, sqlRows)

					checkScenario(t, got)
					if st := m.Stats(); st.Inserts != 1 || st.Errors != 0 || st.Deletes != 1 {
						t.Errorf("Stats %+v: want 1 insert, 1 delete, no error", st)
					}
					if st := other.Stats(); st != (pgsession.Stats{}) {
						t.Errorf("the other Manager's Stats %+v: it stores nothing", st)
					}
					if name == "once" {
						want = got
					} else if want != nil && !reflect.DeepEqual(got, want) {
						t.Errorf("differs from a single middleware:\n got %+v\nwant %+v", got, want)
					}
				})
			}
		})
	}
}

// checkScenario checks the steps of runScenario against what a single
// middleware must do, in absolute terms.
func checkScenario(t *testing.T, steps []step) {
	t.Helper()
	want := []struct {
		body       string
		setCookies int
		rows       int
	}{
		{"logged in", 1, 1},
		{"n=1", 0, 1}, // a write keeps the key: no cookie (see policy.cookieExpires)
		{"n=2", 0, 1},
		{"event 1\nevent 2 for ada\n", 0, 1}, // saved at the Flush
		{`{"n":2,"streamed":true,"user":"ada"}` + "\n", 0, 1},
		{"logged out", 1, 0}, // the cookie expired
		{"{}\n", 0, 0},
	}
	if len(steps) != len(want) {
		t.Fatalf("%d steps, want %d", len(steps), len(want))
	}
	for i, s := range steps {
		w := want[i]
		if s.Status != http.StatusOK || s.Body != w.body || s.SetCookies != w.setCookies || s.Rows != w.rows || s.Applies > 1 || s.Loads > 1 {
			t.Errorf("%s: %+v; want 200, body %q, %d Set-Cookie, %d rows, at most one load and one write", s.Request, s, w.body, w.setCookies, w.rows)
		}
	}
}

// TestDoubleMiddlewareRecorder checks the pass-through without a server:
// the inner middleware hands the outer one's writer and request to the
// handler, so the handler's session is the outer one's.
func TestDoubleMiddlewareRecorder(t *testing.T) {
	m, err := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{[]byte("double middleware test hash key, 32+ bytes")}})
	if err != nil {
		t.Fatal(err)
	}
	var outer *pgsession.Session
	var inner *pgsession.Session
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outer = pgsession.FromContext(r.Context())
		m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inner = pgsession.FromContext(r.Context())
			_ = inner.Set("k", "v")
		})).ServeHTTP(w, r)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK || outer == nil || inner != outer {
		t.Errorf("status %d, inner session %p, outer %p: want 200 and one session", rec.Code, inner, outer)
	}
	if n := len(rec.Result().Header.Values("Set-Cookie")); n != 1 {
		t.Errorf("%d Set-Cookie headers, want 1", n)
	}
}
