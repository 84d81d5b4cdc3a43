package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// The regenerate race in a real browser: a page has requests in flight with
// its session cookie when a login or a key renewal answers with a new one.
// pgsession recognises the replaced key for Config.RotationGrace, so those
// requests neither log the user out nor undo the login (see "Key renewal,
// and requests in flight" in docs/guide.md). The tests below fire the
// requests from the page with fetch() and check what Chromium ends up
// holding and showing.

// raceRounds is how many times each race runs per backend. Every round
// must stay signed in: the correct library never logs the user out, so
// one logout in any round is a failure.
const raceRounds = 10

// How long the race tests' server holds a request before the session
// middleware sees it, so that the rotation falls among the page's requests
// in flight. Chromium sends a page's parallel fetches over some
// milliseconds, each with the cookie it holds when it sends it, so:
//
//   - raceRotateAfter: a request that may rotate the key (the login, or
//     the renewal race's first requests) is held this long, so the page
//     has sent all the round's requests with the old cookie before any
//     response brings the new one. (A real login takes as long: a password
//     check.)
//   - raceLate: a late request, sent with the old cookie, is held this
//     long, so it reaches the server after the rotation; the notes
//     handler holds a slow write this long between loading its session
//     and saving it, so it loads before the rotation and saves after it.
//
// The timing only makes each path of the race likely in every round; the
// assertions hold whatever the order.
const (
	raceRotateAfter = 100 * time.Millisecond
	raceLate        = 300 * time.Millisecond
)

// raceRenewAfter is the RenewAfter of the renewal race: longer than the
// default RotationGrace, as New requires. The test skips the clock by it
// before each round, so the next request renews the key.
const raceRenewAfter = 2 * time.Minute

// skipClock is real time plus the jumps the test makes: the key ages by
// RenewAfter in an instant, while RotationGrace runs in real time during a
// round, as it would in production.
type skipClock struct{ skipped atomic.Int64 }

func (c *skipClock) Now() time.Time       { return time.Now().Add(time.Duration(c.skipped.Load())) }
func (c *skipClock) skip(d time.Duration) { c.skipped.Add(int64(d)) }

// raceFixture is the example app with the configuration main uses (plus
// RenewAfter, when set), and beside it the test-only notes handler, served
// over plain HTTP on 127.0.0.1 like TestBrowser's.
type raceFixture struct {
	srv   *httptest.Server
	clock *skipClock
}

// notesPath is the path of the notes handler, which the example app does
// not have.
const notesPath = "/test/notes"

// holdHeader asks the race server to hold a request for that many
// milliseconds before the session middleware sees it.
const holdHeader = "X-Test-Hold"

// serveRace serves the example on b as serve does, with RenewAfter set to
// renewAfter (0: none, as in main) and a skipClock, and mounts the notes
// handler at notesPath behind the same cross-origin protection and session
// middleware (the same Manager, so the same cookie).
func serveRace(t *testing.T, b backend.Backend, renewAfter time.Duration) *raceFixture {
	t.Helper()
	f := &raceFixture{clock: new(skipClock)}
	cfg := managerConfig(b, [][]byte{testKey}, false, quiet)
	cfg.Now = f.clock.Now
	cfg.RenewAfter = renewAfter
	m, err := pgsession.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", newApp(m, quiet))
	mux.Handle(notesPath, http.NewCrossOriginProtection().Handler(m.Middleware(http.HandlerFunc(notes))))
	f.srv = httptest.NewServer(hold(mux))
	t.Cleanup(f.srv.Close)
	return f
}

// hold holds each request for the milliseconds its holdHeader asks (at
// most a second) before next, and so the session middleware, sees it.
func hold(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.Header.Get(holdHeader)); err == nil && ms > 0 && ms <= 1000 {
			if !sleep(r, time.Duration(ms)*time.Millisecond) {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// sleep waits for d, or until the request ends, and reports whether d
// passed.
func sleep(r *http.Request, d time.Duration) bool {
	select {
	case <-r.Context().Done():
		return false
	case <-time.After(d):
		return true
	}
}

// notes is a test-only handler of the race tests' server. It stands for a
// part of an application that stores something for every visitor, signed
// in or not (a cart, a preference), which the example itself never does:
// its anonymous visitors store nothing. POST ?n=N stores the note N in the
// session and answers 204 (with &slow, only after holding the request for
// raceLate between the load and the save); GET answers the session's notes
// as a JSON list of their names.
func notes(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	switch r.Method {
	case http.MethodPost:
		n := r.URL.Query().Get("n")
		if err := s.Set("note:"+n, n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if r.URL.Query().Has("slow") && !sleep(r, raceLate) {
			return
		}
		w.WriteHeader(http.StatusNoContent) // saves the session
	case http.MethodGet:
		names := []string{}
		for _, k := range s.Keys() {
			if n, ok := strings.CutPrefix(k, "note:"); ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(names)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

// notePath is the path that stores note round.i.
func notePath(round, i int) string { return fmt.Sprintf("%s?n=%d.%d", notesPath, round, i) }

// raceRequest is one fetch() the page sends.
type raceRequest struct {
	Name   string            `json:"name"`
	Method string            `json:"method"`
	Path   string            `json:"path"`
	Form   map[string]string `json:"form,omitempty"` // the body, as a form
	Hold   int64             `json:"hold,omitempty"` // milliseconds the server holds it (see raceLate)

	write bool // it changes the session
}

// raceResponse is what the page saw of one fetch(): the final response,
// redirects followed.
type raceResponse struct {
	Status int    `json:"status"` // 0: the fetch failed
	URL    string `json:"url"`
	Text   string `json:"text"`
}

// fetchAllJS sends every request at once from the page, same-origin with
// credentials, as a page's parallel XHRs do (Chromium adds Sec-Fetch-Site:
// same-origin and Origin, which the cross-origin protection checks), and
// resolves when all have settled.
const fetchAllJS = `(reqs) => Promise.all(reqs.map(async (q) => {
	const init = {method: q.method, credentials: "include", cache: "no-store", headers: {}};
	if (q.hold) init.headers[` + "`" + holdHeader + "`" + `] = String(q.hold);
	if (q.form) init.body = new URLSearchParams(q.form);
	try {
		const r = await fetch(q.path, init);
		return {status: r.status, url: r.url, text: await r.text()};
	} catch (e) {
		return {status: 0, url: "", text: String(e)};
	}
}))`

// fetchAll sends reqs in parallel from the current page and returns what
// each answered, in the same order.
func (b *browser) fetchAll(reqs []raceRequest) []raceResponse {
	b.t.Helper()
	arg, err := json.Marshal(reqs)
	if err != nil {
		b.t.Fatal(err)
	}
	res := value(b, "fetch in parallel", chromedp.Evaluate[[]raceResponse](
		"("+fetchAllJS+")("+string(arg)+")", chromedp.EvalAwaitPromise))
	if len(res) != len(reqs) {
		b.t.Fatalf("fetch in parallel: %d responses to %d requests", len(res), len(reqs))
	}
	return res
}

// clearCookies drops every cookie of the browser.
func (b *browser) clearCookies() {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, storage.ClearCookies, storage.ClearCookiesParams{}); err != nil {
		b.t.Fatalf("Storage.clearCookies: %v", err)
	}
}

// pathOf returns the path of the URL u, or u itself if it does not parse.
func pathOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Path
	}
	return u
}

// describe lists the requests and what they answered, for failure messages.
func describe(reqs []raceRequest, res []raceResponse) string {
	var sb strings.Builder
	for i, q := range reqs {
		fmt.Fprintf(&sb, "\n\t%-12s %s %s: %d at %s", q.Name, q.Method, q.Path, res[i].Status, pathOf(res[i].URL))
		if res[i].Status == http.StatusOK && pathOf(res[i].URL) == "/" {
			fmt.Fprintf(&sb, " (%s)", signedInAs(res[i].Text))
		}
	}
	return sb.String()
}

var userLine = regexp.MustCompile(`<p id="user">(.*?)</p>`)

// signedInAs returns the user line of a start page's markup.
func signedInAs(page string) string {
	if m := userLine.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return "no user line"
}

const adaMarkup = "Logged in as <b>ada</b>"

// TestBrowserLoginRace: a visitor who is not signed in but has a session
// (notes the notes handler stored) logs in while the page has requests in
// flight with the old cookie: writes, a slow write that saves after the
// login, and requests that reach the server after it. The login wins: every
// other request answers without undoing it (a write with the old key is
// either stored before the login or refused with 409, a read of the old key
// after the login sees nothing), and the browser holds the login's cookie
// and shows the user signed in.
func TestBrowserLoginRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		b := startBrowser(t)
		f := serveRace(t, s.backend, 0)
		failed, refused := 0, 0
		for round := 1; round <= raceRounds; round++ {
			// Start signed out: log out through the page after the previous
			// round's login, which leaves no cookie.
			b.open(f.srv.URL)
			if b.has("logout") {
				b.submit("logout", "/")
			}
			if c := b.sessionCookie(); c != nil {
				if failed == 0 {
					t.Fatalf("round %d: signed out, the browser still holds a session cookie: %+v", round, c)
				}
				b.clearCookies() // a stray session left by a failed round
				b.open(f.srv.URL)
			}
			if u := b.text("user"); u != "Not logged in" {
				t.Fatalf("round %d: before the login the page shows %q", round, u)
			}

			// A session for the anonymous visitor: a first note.
			first := []raceRequest{{Name: "first note", Method: http.MethodPost, Path: notePath(round, 0), write: true}}
			if res := b.fetchAll(first); res[0].Status != http.StatusNoContent {
				t.Fatalf("round %d: the first note answered %d: %s", round, res[0].Status, res[0].Text)
			}
			anonCookie := b.sessionCookie()
			if anonCookie == nil {
				t.Fatalf("round %d: the browser holds no session cookie after the first note", round)
			}

			// The login (with the form's fields, same-origin) and, sent with
			// the same cookie, a write that reaches the server before it, a
			// slow write that loads the session before it and saves after
			// it, and three requests that reach the server after it.
			reqs := []raceRequest{
				{Name: "login", Method: http.MethodPost, Path: "/login", Form: map[string]string{"name": "ada"}, Hold: raceRotateAfter.Milliseconds()},
				{Name: "write", Method: http.MethodPost, Path: notePath(round, 1), write: true},
				{Name: "slow write", Method: http.MethodPost, Path: notePath(round, 2) + "&slow", write: true},
				{Name: "late write", Method: http.MethodPost, Path: notePath(round, 3), Hold: raceLate.Milliseconds(), write: true},
				{Name: "late notes", Method: http.MethodGet, Path: notesPath, Hold: raceLate.Milliseconds()},
				{Name: "late page", Method: http.MethodGet, Path: "/", Hold: raceLate.Milliseconds()},
			}
			res := b.fetchAll(reqs)
			ok := true
			for i, q := range reqs {
				r := res[i]
				switch {
				case q.Name == "login":
					// The login's redirect, followed with the new cookie.
					ok = ok && r.Status == http.StatusOK && pathOf(r.URL) == "/" && strings.Contains(r.Text, adaMarkup)
				case q.write:
					// Stored before the login (and dropped by it), or
					// refused after it.
					ok = ok && (r.Status == http.StatusNoContent || r.Status == http.StatusConflict)
					if r.Status == http.StatusConflict {
						refused++
					}
				default:
					ok = ok && r.Status == http.StatusOK
				}
			}
			if !ok {
				t.Errorf("round %d: unexpected answers:%s", round, describe(reqs, res))
			}

			// What the browser holds and shows once everything settled.
			c := b.sessionCookie()
			b.open(f.srv.URL)
			if u := b.text("user"); u != "Logged in as ada" || c == nil || c.Value == anonCookie.Value {
				failed++
				held := "no session cookie"
				switch {
				case c == nil:
				case c.Value == anonCookie.Value:
					held = "the cookie from before the login"
				default:
					held = "the cookie of another session"
				}
				t.Errorf("round %d: LOGGED OUT by the requests in flight: a fresh page shows %q, the browser holds %s; the page's requests answered:%s",
					round, u, held, describe(reqs, res))
			}
		}
		if failed > 0 {
			t.Errorf("logged out in %d of %d rounds", failed, raceRounds)
		}
		// The page saw the race: writes with the old cookie that came too
		// late were refused (409), in every round or nearly.
		t.Logf("%d of %d rounds signed in; %d writes with the old cookie refused after the login", raceRounds-failed, raceRounds, refused)
		if refused == 0 {
			t.Errorf("no write with the old cookie reached the server after the login in %d rounds: the test did not exercise the race", raceRounds)
		}
	})
}

var visitsLine = regexp.MustCompile(`Visits in this session: (\d+)`)

// visitsShown returns the visit count on the current page, or -1.
func (b *browser) visitsShown() int {
	b.t.Helper()
	if !b.has("visits") {
		return -1
	}
	m := visitsLine.FindStringSubmatch(b.text("visits"))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestBrowserRenewalRace: a signed-in user's key is due for renewal
// (Config.RenewAfter) when the page fires parallel requests: the start page
// (whose visit counter writes the session), notes, the devices page, some
// reaching the server after the renewal with the old cookie, and one
// loading the session before the renewal and saving after it. Whichever
// request comes first renews the key; the browser must end up holding the
// new key, still signed in, every request must have been served as the
// signed-in user, and every write must be in the session.
func TestBrowserRenewalRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		b := startBrowser(t)
		f := serveRace(t, s.backend, raceRenewAfter)
		b.open(f.srv.URL)
		b.login("ada", true)
		failed := 0
		for round := 1; round <= raceRounds; round++ {
			if u := b.text("user"); u != "Logged in as ada" {
				t.Fatalf("round %d: before the renewal the page shows %q", round, u)
			}
			before, visits := b.sessionCookie(), b.visitsShown()
			if before == nil || visits < 1 {
				t.Fatalf("round %d: before the renewal the browser holds %+v, the page shows %d visits", round, before, visits)
			}
			f.clock.skip(raceRenewAfter) // the key is due: the next request renews it

			// The start page (its visit counter writes) and a write, one of
			// which renews the key; a slow write that loads the session
			// before the renewal and saves after it; three requests that
			// reach the server after the renewal, with the old cookie.
			reqs := []raceRequest{
				{Name: "page", Method: http.MethodGet, Path: "/", Hold: raceRotateAfter.Milliseconds(), write: true},
				{Name: "write", Method: http.MethodPost, Path: notePath(round, 1), Hold: raceRotateAfter.Milliseconds(), write: true},
				{Name: "slow write", Method: http.MethodPost, Path: notePath(round, 2) + "&slow", write: true},
				{Name: "late write", Method: http.MethodPost, Path: notePath(round, 3), Hold: raceLate.Milliseconds(), write: true},
				{Name: "late page", Method: http.MethodGet, Path: "/", Hold: raceLate.Milliseconds(), write: true},
				{Name: "late devices", Method: http.MethodGet, Path: "/devices", Hold: raceLate.Milliseconds()},
			}
			res := b.fetchAll(reqs)
			// A renewal keeps the user: every request is served as ada.
			ok := true
			var stored []string
			for i, q := range reqs {
				r := res[i]
				switch {
				case q.Path == "/":
					ok = ok && r.Status == http.StatusOK && pathOf(r.URL) == "/" && strings.Contains(r.Text, adaMarkup)
				case q.Path == "/devices":
					ok = ok && r.Status == http.StatusOK && pathOf(r.URL) == "/devices" && strings.Contains(r.Text, "(this device)")
				default:
					ok = ok && r.Status == http.StatusNoContent
					if r.Status == http.StatusNoContent {
						n, _ := url.ParseQuery(q.Path[strings.IndexByte(q.Path, '?')+1:])
						stored = append(stored, n.Get("n"))
					}
				}
			}
			if !ok {
				t.Errorf("round %d: not every request was served as the signed-in user:%s", round, describe(reqs, res))
			}

			// The browser holds the renewed key, and is signed in with it.
			after := b.sessionCookie()
			b.open(f.srv.URL)
			u, v := b.text("user"), b.visitsShown()
			if u != "Logged in as ada" || after == nil {
				failed++
				held := "no session cookie"
				switch {
				case after == nil:
				case after.Value == before.Value:
					held = "the cookie from before the round"
				default:
					held = "a new cookie"
				}
				t.Errorf("round %d: LOGGED OUT by the requests in flight: a fresh page shows %q, the browser holds %s; the page's requests answered:%s",
					round, u, held, describe(reqs, res))
				b.login("ada", true) // sign in again for the next round
				continue
			}
			if after.Value == before.Value {
				t.Errorf("round %d: the browser still holds the key from before the round: no renewal", round)
			}
			// Every GET / of the round counted a visit on top of the count
			// shown before (parallel ones may overwrite each other's), and
			// the fresh page one more.
			if v < visits+2 {
				t.Errorf("round %d: %d visits after the round, want at least %d", round, v, visits+2)
			}
			// Every write answered 2xx is in the session.
			res = b.fetchAll([]raceRequest{{Name: "notes", Method: http.MethodGet, Path: notesPath}})
			var names []string
			if err := json.Unmarshal([]byte(res[0].Text), &names); err != nil || res[0].Status != http.StatusOK {
				t.Fatalf("round %d: GET %s: %d %q (%v)", round, notesPath, res[0].Status, res[0].Text, err)
			}
			for _, n := range stored {
				if !slices.Contains(names, n) {
					t.Errorf("round %d: note %s was answered 204 but is not in the session (notes: %q)", round, n, names)
				}
			}
		}
		if failed > 0 {
			t.Errorf("logged out in %d of %d rounds", failed, raceRounds)
		}
	})
}
