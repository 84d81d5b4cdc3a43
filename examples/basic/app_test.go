package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// testKey is the tests' hash key.
var testKey = []byte("examples/basic: the tests' hash key, 32 bytes or more")

var quiet = slog.New(slog.DiscardHandler)

// store is a backend of the tests. rows counts the sessions it holds, for
// backends that can tell (PostgreSQL); it is nil for the others.
type store struct {
	backend backend.Backend
	rows    func(t *testing.T) int
}

// backends returns constructors of the backends the example runs on: memory,
// and PostgreSQL (lib/pq) in a schema of the test's own, migrated the way
// main does it.
func backends() map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"memory": func(*testing.T) store { return store{backend: pgsession.NewMemoryBackend()} },
		"postgres": func(t *testing.T) store {
			db := pgtest.Open(t, "postgres")
			schema := pgtest.Schema(t, db)
			b, err := newPostgresBackend(t.Context(), db, pgsession.WithTable(schema+".sessions"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			rows := func(t *testing.T) int {
				return pgtest.Count(t, db, `SELECT count(*) FROM "`+schema+`".sessions`)
			}
			return store{backend: b, rows: rows}
		},
	}
}

// forEachStore runs test once per backend, as parallel subtests.
func forEachStore(t *testing.T, test func(t *testing.T, s store)) {
	for name, newStore := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, newStore(t))
		})
	}
}

// forEachBackend runs test once per backend, as parallel subtests.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend.Backend)) {
	forEachStore(t, func(t *testing.T, s store) { test(t, s.backend) })
}

// isSessionCookie reports whether name is the session cookie's: the
// default name, with or without the "__Host-" or "__Secure-" prefix the
// Manager chooses for the cookie's attributes.
func isSessionCookie(name string) bool {
	return name == pgsession.DefaultCookieName || strings.HasSuffix(name, "-"+pgsession.DefaultCookieName)
}

// sessionCookie returns the session cookie among cks, or nil.
func sessionCookie(cks []*http.Cookie) *http.Cookie {
	i := slices.IndexFunc(cks, func(ck *http.Cookie) bool { return isSessionCookie(ck.Name) })
	if i < 0 {
		return nil
	}
	return cks[i]
}

// fixture is the example app served by httptest.
type fixture struct {
	srv   *httptest.Server
	m     *pgsession.Manager
	clock *pgsessiontest.Clock
}

// serve serves the example on b, with the configuration main uses (Secure
// cookie unless insecureCookie) and a settable clock. With useTLS the
// server speaks HTTPS, which Go's cookie jar needs before it sends a Secure
// cookie back.
func serve(t *testing.T, b backend.Backend, useTLS, insecureCookie bool) *fixture {
	t.Helper()
	f := &fixture{clock: pgsessiontest.NewClock(time.Now())}
	cfg := managerConfig(b, [][]byte{testKey}, insecureCookie, quiet)
	cfg.Now = f.clock.Now
	var err error
	if f.m, err = pgsession.New(cfg); err != nil {
		t.Fatal(err)
	}
	if useTLS {
		f.srv = httptest.NewTLSServer(newApp(f.m, quiet))
	} else {
		f.srv = httptest.NewServer(newApp(f.m, quiet))
	}
	t.Cleanup(f.srv.Close)
	return f
}

// client is one browser: its own cookie jar, following redirects. If
// agent is set, it is the User-Agent of its requests.
type client struct {
	t     *testing.T
	f     *fixture
	c     *http.Client
	url   *url.URL
	agent string
}

func (f *fixture) client(t *testing.T) *client {
	c := *f.srv.Client() // a copy: srv.Client returns one shared client
	c.Jar, _ = cookiejar.New(nil)
	u, _ := url.Parse(f.srv.URL)
	return &client{t: t, f: f, c: &c, url: u}
}

// do sends a request with the form (if any) and the headers, and returns the
// final response (redirects followed) and its body.
func (c *client) do(method, path string, form url.Values, hdr http.Header) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.f.srv.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.agent != "" {
		req.Header.Set("User-Agent", c.agent)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, string(b)
}

// page GETs path and returns the body, failing on any status but 200.
func (c *client) page(path string) string {
	c.t.Helper()
	resp, body := c.do(http.MethodGet, path, nil, nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return body
}

// post POSTs form to path like a same-origin browser form and returns the
// body of the page it redirects to.
func (c *client) post(path string, form url.Values) string {
	c.t.Helper()
	resp, body := c.do(http.MethodPost, path, form, http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {c.f.srv.URL}})
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, body)
	}
	return body
}

// cookie returns the session cookie the jar holds (name and value), or nil.
func (c *client) cookie() *http.Cookie {
	return sessionCookie(c.c.Jar.Cookies(c.url))
}

// replay GETs the start page with only the given session cookie, as a
// thief holding an old cookie would, and returns the body.
func (f *fixture) replay(t *testing.T, cookie *http.Cookie) string {
	t.Helper()
	c := *f.srv.Client()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL, nil)
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: no %q in\n%s", what, w, got)
		}
	}
}

func visits(n string) string { return "Visits in this session: " + n + "<" }

const anonymous = `<p id="user">Not logged in</p>`

// flash returns the markup of the flash message msg.
func flash(msg string) string { return `<p id="flash" role="status">` + msg + `</p>` }

// noFlash is the start of the flash message's markup, which a page
// without one does not hold.
const noFlash = `id="flash"`

// The whole flow: an anonymous visit that stores nothing, login with a
// new session, counted visits, a second login with a new key, logout.
func TestExampleFlow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		c := f.client(t)

		resp, body := c.do(http.MethodGet, "/", nil, nil)
		wantContains(t, "first visit", body, anonymous)
		if strings.Contains(body, "Visits") || len(resp.Header["Set-Cookie"]) != 0 {
			t.Errorf("anonymous visit: Set-Cookie %q, page\n%s\nwant no cookie and no visit counter", resp.Header["Set-Cookie"], body)
		}

		// Login creates the session; the page it leads to counts a visit.
		body = c.post("/login", url.Values{"name": {"ada"}})
		wantContains(t, "after login", body, "Logged in as <b>ada</b>", visits("1"), flash("Welcome, ada"))
		if st := f.m.Stats(); st.Inserts != 1 {
			t.Errorf("login stored %d sessions, want 1", st.Inserts)
		}
		resp, body = c.do(http.MethodGet, "/", nil, nil)
		wantContains(t, "next visit", body, visits("2"), "Logged in as <b>ada</b>")
		// A write keeps the key, so its response re-sends no cookie (one that
		// did could undo a concurrent login in the browser's jar).
		if ck := sessionCookie(resp.Cookies()); ck != nil {
			t.Errorf("a counted visit sent the session cookie again: %q", resp.Header["Set-Cookie"])
		}

		// A second login (another user on this browser) rotates the key:
		// the key from before is dead, so one planted before a login
		// (session fixation) is worth nothing.
		first := c.cookie()
		before := f.m.Stats()
		wantContains(t, "after the second login", c.post("/login", url.Values{"name": {"bob"}}), "Logged in as <b>bob</b>")
		if got := f.m.Stats().Rotations - before.Rotations; got != 1 {
			t.Errorf("the second login made %d rotations, want 1", got)
		}
		loggedIn := c.cookie()
		if loggedIn == nil || loggedIn.Value == first.Value {
			t.Fatalf("login left the cookie %v (was %v)", loggedIn, first)
		}
		wantContains(t, "the cookie from before the login", f.replay(t, first), anonymous)

		// Logout: the session is cleared down to the message, which the
		// start page shows and thereby deletes, expiring the cookie.
		before = f.m.Stats()
		wantContains(t, "after logout", c.post("/logout", nil), flash("You are signed out."), anonymous)
		if k := c.cookie(); k != nil {
			t.Errorf("the browser still holds a session cookie after logout: %v", k)
		}
		if st := f.m.Stats(); st.Deletes-before.Deletes != 1 {
			t.Errorf("logout deleted %d sessions, want 1", st.Deletes-before.Deletes)
		}
		wantContains(t, "the cookie from before the logout", f.replay(t, loggedIn), anonymous)
		wantContains(t, "back on the start page", c.page("/"), anonymous)
	})
}

// anonymousRequests are requests of every route by a visitor who is not
// logged in, the way a browser or a crawler sends them.
var anonymousRequests = []struct {
	method, path string
	form         url.Values
}{
	{http.MethodGet, "/", nil},
	{http.MethodGet, "/?utm_source=crawler", nil},
	{http.MethodGet, "/devices", nil},
	{http.MethodGet, "/events", nil},
	{http.MethodGet, "/healthz", nil},
	{http.MethodGet, "/debug/vars", nil},
	{http.MethodGet, "/no-such-page", nil},
	{http.MethodHead, "/", nil},
	{http.MethodPost, "/login", url.Values{"name": {""}}}, // refused: no name
	{http.MethodPost, "/logout", url.Values{}},
	{http.MethodPost, "/logout-everywhere", url.Values{}},
	{http.MethodPost, "/devices/signout-others", url.Values{}},
	{http.MethodPost, "/devices/" + strings.Repeat("ab", 16) + "/signout", url.Values{}},
	{http.MethodPost, "/devices/not-an-id/signout", url.Values{}},
}

// Anonymous visitors store nothing: no row, no memory, no cookie, however
// many of them come (issue 10.6: 2,730 anonymous requests made 2,730 rows).
func TestExampleAnonymousVisitorsStoreNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		f := serve(t, s.backend, true, false)
		const visitors = 10
		for range visitors {
			c := f.client(t) // a new visitor each time, as a crawler without a jar is
			for _, r := range anonymousRequests {
				hdr := http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {f.srv.URL}}
				resp, _ := c.do(r.method, r.path, r.form, hdr)
				if resp.StatusCode >= 500 {
					t.Fatalf("%s %s: %d", r.method, r.path, resp.StatusCode)
				}
				for _, resp := range responses(resp) { // redirects included
					if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
						t.Fatalf("%s %s: an anonymous visitor got Set-Cookie %q", r.method, resp.Request.URL.Path, sc)
					}
				}
			}
			if ck := c.cookie(); ck != nil {
				t.Fatalf("an anonymous visitor holds the session cookie %v", ck)
			}
		}
		if st := f.m.Stats(); st != (pgsession.Stats{}) {
			t.Errorf("%d anonymous visitors reached the session store: %+v", visitors, st)
		}
		if s.rows != nil {
			if n := s.rows(t); n != 0 {
				t.Errorf("%d anonymous visitors left %d sessions in the table", visitors, n)
			}
		}
	})
}

// responses returns resp and the responses that redirected to it.
func responses(resp *http.Response) []*http.Response {
	var all []*http.Response
	for ; resp != nil; resp = resp.Request.Response {
		all = append(all, resp)
	}
	return all
}

// event is one server-sent event of /events.
type event struct {
	N       int    `json:"n"`
	User    string `json:"user"`
	Visits  int    `json:"visits"`
	Streams int    `json:"streams"`
}

// The event stream reads the session while it is flushed, and its response
// carries the session cookie. An anonymous stream stores nothing.
func TestExampleEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		c := f.client(t)
		resp, body := c.do(http.MethodGet, "/events", nil, nil)
		wantContains(t, "anonymous stream", body, `data: {"n":1,"user":"","visits":0,"streams":0}`, "event: end")
		if sc := resp.Header["Set-Cookie"]; len(sc) != 0 || f.m.Stats() != (pgsession.Stats{}) {
			t.Errorf("anonymous stream: Set-Cookie %q, stats %+v; want no cookie and no store access", sc, f.m.Stats())
		}
		c.post("/login", url.Values{"name": {"ada"}})

		for stream := 1; stream <= 2; stream++ {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/events", nil)
			resp, err := c.c.Do(req) // returns at the first flush, with the headers
			if err != nil {
				t.Fatal(err)
			}
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				t.Fatalf("GET /events: %d, Content-Type %q", resp.StatusCode, ct)
			}
			// The stream counter changed, so the session was saved at the
			// first flush; a write keeps the key, so no cookie went out.
			if ck := sessionCookie(resp.Cookies()); ck != nil {
				t.Errorf("stream %d: session cookie sent again: %q", stream, resp.Header["Set-Cookie"])
			}
			var events []event
			var ended bool
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				switch line := sc.Text(); {
				case line == "event: end":
					ended = true
				case strings.HasPrefix(line, "data: ") && !ended:
					var ev event
					if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
						t.Fatalf("event %q: %v", line, err)
					}
					events = append(events, ev)
				}
			}
			resp.Body.Close()
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			want := make([]event, eventCount)
			for i := range want {
				want[i] = event{N: i + 1, User: "ada", Visits: 1, Streams: stream}
			}
			if !slices.Equal(events, want) || !ended {
				t.Errorf("stream %d: events %+v (ended %v), want %+v and an end event", stream, events, ended, want)
			}
		}
	})
}

// The health check freezes the session: a probe that carries a session
// cookie writes nothing and gets no cookie, even when any other request
// would have written the access time.
func TestExampleHealthzSetsNoCookie(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		c := f.client(t)
		c.post("/login", url.Values{"name": {"ada"}})
		f.clock.Advance(pgsession.DefaultTimeoutResolution + time.Minute) // the access time is now stale

		before := f.m.Stats()
		resp, body := c.do(http.MethodGet, "/healthz", nil, nil)
		if resp.StatusCode != http.StatusOK || body != "ok\n" {
			t.Fatalf("healthz: %d %q", resp.StatusCode, body)
		}
		if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
			t.Errorf("healthz set cookies %q", sc)
		}
		want := before
		want.Loads++ // the session is read, and nothing else happens
		if after := f.m.Stats(); after != want {
			t.Errorf("healthz changed the stats beyond one load: before %+v, after %+v", before, after)
		}
		// Anonymous probes create nothing either.
		resp, _ = f.client(t).do(http.MethodGet, "/healthz", nil, nil)
		if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
			t.Errorf("anonymous healthz set cookies %q", sc)
		}
		// The same kind of request without the freeze does write.
		resp, _ = c.do(http.MethodGet, "/devices", nil, nil)
		if st := f.m.Stats(); st.Updates != before.Updates+1 || len(resp.Header["Set-Cookie"]) != 0 {
			t.Errorf("an unfrozen read after the resolution: %d updates, Set-Cookie %q; want 1 update and no cookie (the key is kept)",
				st.Updates-before.Updates, resp.Header["Set-Cookie"])
		}
	})
}

// State-changing routes refuse cross-origin requests (CSRF) before the
// session is loaded.
func TestExampleRefusesCrossOriginPost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		victim := f.client(t)
		victim.post("/login", url.Values{"name": {"ada"}})

		id := strings.Repeat("ab", 16)
		if list, err := f.m.ListByPrincipal(t.Context(), "ada"); err == nil && len(list) == 1 {
			id = list[0].ID.String() // the victim's own session
		}
		for _, path := range []string{"/login", "/logout", "/logout-everywhere", "/devices/signout-others", "/devices/" + id + "/signout"} {
			for _, hdr := range []http.Header{
				{"Sec-Fetch-Site": {"cross-site"}},
				{"Sec-Fetch-Site": {"same-site"}}, // a sibling subdomain is another origin
				{"Origin": {"https://evil.example"}},
			} {
				before := f.m.Stats()
				// The victim's browser, sent by another site's form: the
				// session cookie goes along.
				resp, body := victim.do(http.MethodPost, path, url.Values{"name": {"mallory"}}, hdr)
				if resp.StatusCode != http.StatusForbidden || len(resp.Header["Set-Cookie"]) != 0 {
					t.Errorf("POST %s with %v: %d %q, Set-Cookie %q; want 403 and no cookie", path, hdr, resp.StatusCode, body, resp.Header["Set-Cookie"])
				}
				if after := f.m.Stats(); after != before {
					t.Errorf("POST %s with %v reached the session store: %+v, then %+v", path, hdr, before, after)
				}
			}
		}
		wantContains(t, "after the refused requests", victim.page("/"), "Logged in as <b>ada</b>")
	})
}

// A user can end all of their sessions at once.
func TestExampleLogoutEverywhere(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		phone, laptop := f.client(t), f.client(t)
		phone.post("/login", url.Values{"name": {"ada"}})
		laptop.post("/login", url.Values{"name": {"ada"}})
		if n := strings.Count(laptop.page("/devices"), `<tr class="session">`); n != 2 {
			t.Fatalf("lists %d sessions, want 2", n)
		}
		wantContains(t, "after logging out everywhere", laptop.post("/logout-everywhere", nil),
			flash("You are signed out here and on 1 other device."), anonymous)
		for _, c := range []*client{phone, laptop} {
			wantContains(t, "afterwards", c.page("/"), anonymous)
		}
	})
}

// /debug/vars shows the Manager's statistics and nothing else: no command
// line, no memory statistics, no variable another package published; and
// nothing is shared between two apps in one process.
func TestExampleStats(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		other := serve(t, pgsession.NewMemoryBackend(), true, false) // a second app: no clash
		c := f.client(t)
		c.page("/")
		c.page("/")
		c.post("/login", url.Values{"name": {"ada"}})

		// Anonymous visits do nothing; the login inserts, and its page
		// loads and counts a visit.
		want := f.m.Stats()
		if want != (pgsession.Stats{Loads: 1, Inserts: 1, Updates: 1}) {
			t.Errorf("stats %+v, want 1 load, 1 insert, 1 update", want)
		}
		resp, body := c.do(http.MethodGet, "/debug/vars", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("/debug/vars: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
			t.Errorf("/debug/vars set cookies %q", sc)
		}
		var vars map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &vars); err != nil {
			t.Fatalf("/debug/vars is not a JSON object: %v\n%s", err, body)
		}
		var got pgsession.Stats
		if err := json.Unmarshal(vars[statsVar], &got); err != nil || got != want {
			t.Errorf("/debug/vars %q = %s (%v), want %+v", statsVar, vars[statsVar], err, want)
		}
		for name := range vars {
			if name != statsVar {
				t.Errorf("/debug/vars shows %q; want the session statistics only", name)
			}
		}
		if strings.Contains(body, "cmdline") || strings.Contains(body, "memstats") {
			t.Errorf("/debug/vars shows expvar's variables:\n%s", body)
		}
		if after := f.m.Stats(); after != want {
			t.Errorf("reading /debug/vars touched the session store: %+v, then %+v", want, after)
		}

		_, body = other.client(t).do(http.MethodGet, "/debug/vars", nil, nil)
		if err := json.Unmarshal([]byte(body), &vars); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(vars[statsVar], &got); err != nil || got != (pgsession.Stats{}) {
			t.Errorf("the other app's /debug/vars shows %s (%v), want its own zero stats", vars[statsVar], err)
		}
	})
}
