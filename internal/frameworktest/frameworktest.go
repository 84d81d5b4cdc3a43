// Package frameworktest runs one end-to-end scenario of pgsession against a
// router of any web framework that serves net/http: login with RotateKey, a
// data write read back on the next request, a streamed response, logout. The
// router is served by httptest on a real socket, on the memory backend and
// on PostgreSQL (see internal/pgtest).
//
// The application is a handful of net/http handlers (App); a framework's
// test mounts them the framework's way, with pgsession's middleware around
// every route and a route group behind RequireLogin, and calls Test:
//
//	frameworktest.Test(t, func(a *frameworktest.App) http.Handler {
//		mux := http.NewServeMux()
//		...
//		return a.Manager.Middleware(mux)
//	})
//
// It lives in the root module and uses the standard library only, so the
// modules that test frameworks (examples/, ginsession/) share it without any
// framework entering the root module's graph.
package frameworktest

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// Route is one route of the App.
type Route struct {
	Method, Path string
	Handler      http.HandlerFunc
}

// App is the small application every framework serves in the scenario. Its
// handlers reach the session through the request's context, as a handler of
// any net/http framework does.
type App struct {
	Manager *pgsession.Manager

	// release lets the streamed response go on after its first chunk, once
	// the client has seen the header and that chunk.
	release chan struct{}
}

// NewApp returns an App whose Manager stores sessions in b. The cookie is
// Insecure because httptest serves plain HTTP.
func NewApp(t testing.TB, b backend.Backend) *App {
	t.Helper()
	m, err := pgsession.New(pgsession.Config{
		Backend:  b,
		HashKeys: [][]byte{[]byte("frameworktest: the tests' hash key, 32 bytes or more")},
		Cookie:   pgsession.CookieConfig{Insecure: true},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &App{Manager: m, release: make(chan struct{})}
}

// Public returns the routes anyone may call:
//
//	GET  /visit   counts visits in the session (an anonymous session)
//	POST /login   logs "ada" in, rotating the session's key
//	GET  /me      shows the session's data
//	GET  /stream  writes to the session, then streams three flushed chunks
func (a *App) Public() []Route {
	return []Route{
		{http.MethodGet, "/visit", a.visit},
		{http.MethodPost, "/login", a.login},
		{http.MethodGet, "/me", a.me},
		{http.MethodGet, "/stream", a.stream},
	}
}

// Protected returns the routes of the group behind RequireLogin:
//
//	POST /cart    adds the query's item to the session's cart
//	POST /logout  ends the session
func (a *App) Protected() []Route {
	return []Route{
		{http.MethodPost, "/cart", a.cart},
		{http.MethodPost, "/logout", a.logout},
	}
}

// LoggedIn reports whether r's session has a user.
func LoggedIn(r *http.Request) bool {
	return pgsession.FromContext(r.Context()).Has("user")
}

// RequireLogin answers 401 to a request whose session has no user, and
// passes the others to next: the middleware of the route group.
func RequireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoggedIn(r) {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func fail(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

func (a *App) visit(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var n int
	if _, err := s.Get("visits", &n); err != nil {
		fail(w, err)
		return
	}
	if err := s.Set("visits", n+1); err != nil {
		fail(w, err)
		return
	}
	_, _ = io.WriteString(w, "visits: "+strconv.Itoa(n+1))
}

func (a *App) login(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.RotateKey(r.Context()); err != nil {
		fail(w, err)
		return
	}
	if err := pgsession.FromContext(r.Context()).Set("user", "ada"); err != nil {
		fail(w, err)
		return
	}
	_, _ = io.WriteString(w, "welcome ada")
}

// me writes the session's data as key=JSON pairs in key order, or nothing
// for an empty session.
func (a *App) me(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	keys := s.Keys()
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		var v json.RawMessage
		if _, err := s.Get(k, &v); err != nil {
			fail(w, err)
			return
		}
		out = append(out, k+"="+string(v))
	}
	_, _ = io.WriteString(w, strings.Join(out, " "))
}

func (a *App) cart(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var items []string
	if _, err := s.Get("cart", &items); err != nil {
		fail(w, err)
		return
	}
	item := r.URL.Query().Get("item")
	if err := s.Set("cart", append(items, item)); err != nil {
		fail(w, err)
		return
	}
	_, _ = io.WriteString(w, "added "+item)
}

// stream changes the session, then writes three chunks, flushing each: the
// first through http.Flusher, the others through http.ResponseController.
// After the first it waits until the client has read it (or 10 s).
func (a *App) stream(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FromContext(r.Context()).Set("streamed", true); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "chunk 1\n")
	w.(http.Flusher).Flush()
	select {
	case <-a.release:
	case <-r.Context().Done():
		return
	case <-time.After(10 * time.Second):
	}
	rc := http.NewResponseController(w)
	for _, chunk := range []string{"chunk 2\n", "chunk 3\n"} {
		_, _ = io.WriteString(w, chunk)
		if err := rc.Flush(); err != nil {
			_, _ = io.WriteString(w, "flush: "+err.Error())
			return
		}
	}
	// A change after the response started is refused, never lost silently.
	if err := pgsession.FromContext(r.Context()).Set("late", true); err == nil {
		_, _ = io.WriteString(w, "late change accepted")
	}
}

func (a *App) logout(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FromContext(r.Context()).Clear(); err != nil {
		fail(w, err)
		return
	}
	_, _ = io.WriteString(w, "bye")
}

// Store is a backend of the scenario. Rows counts the sessions it holds
// where the backend can tell (PostgreSQL), else it is nil.
type Store struct {
	Backend backend.Backend
	Rows    func(t testing.TB) int
}

// Stores returns constructors of the scenario's backends: memory, and
// PostgreSQL (lib/pq) in a schema of the test's own.
func Stores() map[string]func(t testing.TB) Store {
	return map[string]func(t testing.TB) Store{
		"memory": func(testing.TB) Store { return Store{Backend: pgsession.NewMemoryBackend()} },
		"postgres": func(t testing.TB) Store {
			b, table := pgtest.NewBackend(t, "postgres")
			db := pgtest.Open(t, "postgres")
			return Store{Backend: b, Rows: func(t testing.TB) int {
				return pgtest.Count(t, db, "SELECT count(*) FROM "+table)
			}}
		},
	}
}

// Test runs the scenario against the handler router returns for an App, once
// per Store, as parallel subtests.
func Test(t *testing.T, router func(a *App) http.Handler) {
	for name, newStore := range Stores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := newStore(t)
			app := NewApp(t, st.Backend)
			Run(t, app, router(app), st.Rows)
		})
	}
}

// client sends requests to the server under test with explicit cookies (no
// jar), so the test decides which cookie each request carries.
type client struct {
	t    *testing.T
	srv  *httptest.Server
	name string // the session cookie's name
}

// response is what the scenario checks of an answer.
type response struct {
	status int
	body   string
	cookie *http.Cookie // the session cookie set, or nil
}

func (c *client) do(method, path string, cookie *http.Cookie) response {
	c.t.Helper()
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.srv.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, body: string(b), cookie: c.sessionCookie(resp)}
}

// sessionCookie returns the session cookie resp sets, or nil.
func (c *client) sessionCookie(resp *http.Response) *http.Cookie {
	i := slices.IndexFunc(resp.Cookies(), func(ck *http.Cookie) bool { return ck.Name == c.name })
	if i < 0 {
		return nil
	}
	return resp.Cookies()[i]
}

// expect fails the test unless r has the given status and body.
func (c *client) expect(step string, r response, status int, body string) {
	c.t.Helper()
	if r.status != status || r.body != body {
		c.t.Fatalf("%s: got %d %q, want %d %q", step, r.status, r.body, status, body)
	}
}

// live fails the test unless r sets a live session cookie, and returns it.
func (c *client) live(step string, r response) *http.Cookie {
	c.t.Helper()
	if r.cookie == nil || r.cookie.Value == "" || r.cookie.MaxAge < 0 {
		c.t.Fatalf("%s: want a live session cookie, got %v", step, r.cookie)
	}
	return r.cookie
}

// Run runs the scenario against h served by httptest. rows, if not nil,
// counts the sessions stored.
func Run(t *testing.T, app *App, h http.Handler, rows func(testing.TB) int) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := &client{t: t, srv: srv, name: app.Manager.CookieName()}
	wantRows := func(step string, n int) {
		t.Helper()
		if rows == nil {
			return
		}
		if got := rows(t); got != n {
			t.Fatalf("%s: %d sessions stored, want %d", step, got, n)
		}
	}

	// An anonymous session, then a login that rotates its key: a new
	// cookie, the data carried over, the old cookie dead.
	r := c.do("GET", "/visit", nil)
	c.expect("first visit", r, 200, "visits: 1")
	anon := c.live("first visit", r)
	wantRows("first visit", 1)
	c.expect("protected route before login", c.do("POST", "/cart?item=pear", anon), 401, "log in first\n")

	r = c.do("POST", "/login", anon)
	c.expect("login", r, 200, "welcome ada")
	user := c.live("login", r)
	if user.Value == anon.Value {
		t.Fatal("login: the session cookie kept its value; RotateKey must change it")
	}
	wantRows("login", 1) // the old row deleted, the new one inserted
	r = c.do("GET", "/me", anon)
	c.expect("old cookie after login", r, 200, "")
	if r.cookie != nil && r.cookie.MaxAge >= 0 {
		t.Fatalf("old cookie after login: a session cookie was set: %v", r.cookie)
	}
	c.expect("old cookie on the group", c.do("POST", "/cart?item=pear", anon), 401, "log in first\n")

	// A write in the route group, read back on the next request.
	r = c.do("POST", "/cart?item=apple", user)
	c.expect("cart", r, 200, "added apple")
	if r.cookie != nil && r.cookie.Value != user.Value {
		t.Fatalf("cart: the cookie changed: %v", r.cookie)
	}
	c.expect("read back", c.do("GET", "/me", user), 200, `cart=["apple"] user="ada" visits=1`)
	wantRows("cart", 1)

	// A streamed response of a new session: the cookie comes with the
	// header, before the handler finished, and the data is stored.
	streamed := streamScenario(t, c, app)
	wantRows("stream", 2)
	c.expect("stream read back", c.do("GET", "/me", streamed), 200, `streamed=true`)

	// Logout: the cookie expired, the row gone, the cookie dead.
	r = c.do("POST", "/logout", user)
	c.expect("logout", r, 200, "bye")
	if r.cookie == nil || r.cookie.MaxAge >= 0 || r.cookie.Value != "" {
		t.Fatalf("logout: want the session cookie expired, got %v", r.cookie)
	}
	wantRows("logout", 1) // the streamed session's
	c.expect("cookie after logout", c.do("GET", "/me", user), 200, "")
	c.expect("group after logout", c.do("POST", "/cart?item=fig", user), 401, "log in first\n")
}

// streamScenario reads /stream: the session cookie must be in the header
// and the first chunk readable while the handler still waits, before
// app.release lets it finish. It returns the cookie.
func streamScenario(t *testing.T, c *client, app *App) *http.Cookie {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", c.srv.URL+"/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	ck := c.sessionCookie(resp)
	if ck == nil || ck.MaxAge < 0 {
		close(app.release)
		t.Fatalf("stream: no live session cookie with the first bytes: %v", resp.Header.Values("Set-Cookie"))
	}
	body := bufio.NewReader(resp.Body)
	first, err := body.ReadString('\n')
	if first != "chunk 1\n" || err != nil {
		close(app.release)
		t.Fatalf("stream: first chunk %q, %v", first, err)
	}
	close(app.release) // the handler has flushed chunk 1 and is waiting
	rest, err := io.ReadAll(body)
	if err != nil || string(rest) != "chunk 2\nchunk 3\n" {
		t.Fatalf("stream: rest %q, %v", rest, err)
	}
	if !slices.Contains(resp.TransferEncoding, "chunked") {
		t.Errorf("stream: not chunked (%v, %v): the response was buffered", resp.TransferEncoding, resp.Header)
	}
	return ck
}
