package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	"github.com/pgsession/pgsession"
)

// Time limits of the browser tests: the whole browser, and each step.
const (
	browserTimeout = 2 * time.Minute
	stepTimeout    = 20 * time.Second
)

// chromium returns the path of a Chromium or Chrome binary on PATH. Without
// one the test skips, except under CI=true, where .ci/run installs Debian's
// chromium and a missing browser is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome"}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no %s on PATH; install one (Debian: apt-get install -y chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true requires the browser test: "+why, strings.Join(names, ", "))
	}
	t.Skipf("SKIPPING the browser test: "+why, strings.Join(names, ", "))
	return ""
}

// browser is one headless Chromium with a fresh profile.
type browser struct {
	t   *testing.T
	ctx context.Context // a chromedp context with the browser started
}

// startBrowser starts headless Chromium with the given extra options. The
// browser is killed when the test ends or after browserTimeout.
func startBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // root in a container has no user namespaces
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true), // the tests only talk to their own servers
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), browserTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(opts, extra...)...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// Cleanups run last-in first-out: the browser is gone (and has let go
	// of the profile directory) before t.TempDir is removed.
	t.Cleanup(cancelTimeout)
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return &browser{t: t, ctx: ctx}
}

// do runs the actions within stepTimeout.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// run runs one action within stepTimeout and returns its value.
func value[T any](b *browser, what string, action chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// open navigates to u and fails unless the page answers 200.
func (b *browser) open(u string) {
	b.t.Helper()
	if resp := value(b, "open "+u, chromedp.NavigateResponse(u)); resp.Status != http.StatusOK {
		b.t.Fatalf("open %s: %d", u, resp.Status)
	}
}

// submit clicks the button (or link) with the given id, waits for the page
// it leads to, and fails unless that answers 200 at path.
func (b *browser) submit(button, path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID(button)))
	if err != nil {
		b.t.Fatalf("click #%s: %v", button, err)
	}
	if u, _ := url.Parse(resp.URL); resp.Status != http.StatusOK || u == nil || u.Path != path {
		b.t.Fatalf("click #%s: %d at %s, want 200 at %s", button, resp.Status, resp.URL, path)
	}
}

// text returns the text of the element with the given id.
func (b *browser) text(id string) string {
	b.t.Helper()
	return value(b, "text of #"+id, chromedp.Text(chromedp.ID(id)))
}

// has reports whether the page has an element with the given id.
func (b *browser) has(id string) bool {
	b.t.Helper()
	return value(b, "look for #"+id, chromedp.Evaluate[bool](`document.getElementById(`+strconv.Quote(id)+`) !== null`))
}

// sessionCookie returns the session cookie as the browser stores it (all
// of the profile's cookies, not only the current page's), or nil.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, storage.GetCookies, storage.GetCookiesParams{})
	if err != nil {
		b.t.Fatalf("Storage.getCookies: %v", err)
	}
	var found *network.Cookie
	for _, c := range res.Cookies {
		if isSessionCookie(c.Name) {
			if found != nil {
				b.t.Fatalf("two session cookies: %+v and %+v", found, c)
			}
			found = c
		}
	}
	return found
}

// consoleLog records what Chromium logs to the console of the browser's
// tab (Log.entryAdded): blocked resources, Content-Security-Policy
// violations, refused frames.
type consoleLog struct {
	mu      sync.Mutex
	entries []string
}

// recordConsole starts recording the console of b's tab.
func (b *browser) recordConsole() *consoleLog {
	b.t.Helper()
	l := new(consoleLog)
	err := chromedp.Listen(b.ctx, func(ev any) {
		if e, ok := ev.(*log.EventEntryAdded); ok {
			l.mu.Lock()
			l.entries = append(l.entries, fmt.Sprintf("%s %s: %s", e.Entry.Source, e.Entry.Level, e.Entry.Text))
			l.mu.Unlock()
		}
	})
	if err != nil {
		b.t.Fatalf("listen to the console: %v", err)
	}
	return l
}

// matching returns the entries so far that contain any of subs.
func (l *consoleLog) matching(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.entries {
		for _, s := range subs {
			if strings.Contains(e, s) {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// styled reports whether the page's stylesheet applies: the header bar has
// the stylesheet's background, not the browser's transparent default.
func (b *browser) styled() bool {
	b.t.Helper()
	return value(b, "the header's style", chromedp.Evaluate[bool](
		`getComputedStyle(document.querySelector("header.bar")).backgroundColor !== "rgba(0, 0, 0, 0)"`))
}

// login types name into the start page's form, ticks "Remember me" if
// remember is set, and submits the form.
func (b *browser) login(name string, remember bool) {
	b.t.Helper()
	b.do("type the name", chromedp.SendKeys(chromedp.ID("name"), name))
	if remember {
		b.do("tick remember me", chromedp.Click(chromedp.ID("remember")))
	}
	b.submit("login", "/")
}

// TestBrowser drives the example in headless Chromium the way `go run
// ./examples/basic` serves it: plain HTTP on 127.0.0.1, Secure cookie. It
// visits anonymously, logs in through the form with "Remember me", sees
// the welcome message once, opens the devices page, streams events, logs
// out, and checks what the browser itself stored.
func TestBrowser(t *testing.T) {
	b := startBrowser(t)
	f := serve(t, pgsession.NewMemoryBackend(), false, false)
	if !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("httptest serves %s, want http://127.0.0.1", f.srv.URL)
	}

	console := b.recordConsole()

	// An anonymous visit stores nothing, here or on the server.
	b.open(f.srv.URL)
	b.open(f.srv.URL)
	if u := b.text("user"); u != "Not logged in" {
		t.Fatalf("first page: %q", u)
	}
	if !b.styled() {
		t.Errorf("the start page is unstyled: the stylesheet did not apply")
	}
	if c := b.sessionCookie(); c != nil {
		t.Errorf("an anonymous visit stored a session cookie: %+v", c)
	}
	if st := f.m.Stats(); st != (pgsession.Stats{}) {
		t.Errorf("anonymous visits reached the session store: %+v", st)
	}

	// Log in through the form, remembered. Chromium keeps a Secure cookie
	// over http:// on a loopback address.
	b.login("ada", true)
	if v, u, m := b.text("visits"), b.text("user"), b.text("flash"); v != "Visits in this session: 1" || u != "Logged in as ada" || m != "Welcome, ada" {
		t.Errorf("after login: %q, %q, message %q", v, u, m)
	}
	loggedIn := b.sessionCookie()
	if loggedIn == nil {
		t.Fatal("the browser stored no session cookie from http://127.0.0.1")
	}
	if loggedIn.Name != "__Host-"+pgsession.DefaultCookieName || !loggedIn.HTTPOnly || !loggedIn.Secure || loggedIn.SameSite != network.CookieSameSiteLax ||
		loggedIn.Path != "/" || loggedIn.Domain != "127.0.0.1" || loggedIn.Session {
		t.Errorf("stored cookie %+v: want __Host-%s, HttpOnly, Secure, SameSite=Lax, Path=/, host 127.0.0.1, persistent", loggedIn, pgsession.DefaultCookieName)
	}
	// "Remember me": the cookie outlives the browser, for 30 days.
	const month = 30 * 24 * time.Hour
	if exp := time.Unix(int64(loggedIn.Expires), 0); exp.Before(time.Now().Add(month-time.Hour)) || exp.After(time.Now().Add(month+time.Minute)) {
		t.Errorf("cookie expires at %v, want about %v from now", exp, month)
	}
	if st := f.m.Stats(); st.Inserts != 1 {
		t.Errorf("login stored %d sessions, want 1", st.Inserts)
	}

	// The message is shown once.
	b.do("reload", chromedp.Reload())
	if v, u := b.text("visits"), b.text("user"); v != "Visits in this session: 2" || u != "Logged in as ada" {
		t.Errorf("after reload: %q, %q", v, u)
	}
	if b.has("flash") {
		t.Errorf("after reload, the welcome message is shown again: %q", b.text("flash"))
	}

	// The devices page lists this browser as the current session.
	b.submit("devices", "/devices")
	if list := b.text("sessions"); !strings.Contains(list, "(this device)") || !strings.Contains(list, "Chrome") || !strings.Contains(list, "127.0.0.1") {
		t.Errorf("the devices page lists %q, want this Chrome at 127.0.0.1 as (this device)", list)
	}
	if n := value(b, "count the sessions", chromedp.Evaluate[int](`document.querySelectorAll("tr.session").length`)); n != 1 {
		t.Errorf("the devices page lists %d sessions, want 1", n)
	}
	b.submit("home", "/")

	// Server-sent events through EventSource, with the session cookie.
	b.do("start the stream", chromedp.Click(chromedp.ID("stream")))
	value(b, "wait for the events", chromedp.Poll[bool](`document.querySelectorAll("#events li").length >= `+strconv.Itoa(eventCount)))
	if ev := b.text("events"); strings.Count(ev, `"user":"ada"`) != eventCount || !strings.Contains(ev, `"streams":1`) {
		t.Errorf("events on the page: %q", ev)
	}

	// Log out: the start page shows the message, and showing it deleted
	// the small session that carried it, so the browser drops the cookie.
	b.submit("logout", "/")
	if u, m := b.text("user"), b.text("flash"); u != "Not logged in" || m != "You are signed out." {
		t.Errorf("after logout: %q, message %q", u, m)
	}
	if c := b.sessionCookie(); c != nil {
		t.Errorf("the browser still stores a session cookie after logout: %+v", c)
	}
	wantContains(t, "the cookie from before the logout", f.replay(t, &http.Cookie{Name: loggedIn.Name, Value: loggedIn.Value}), anonymous)
	b.do("reload after logout", chromedp.Reload())
	if b.has("flash") || b.text("user") != "Not logged in" {
		t.Errorf("after logout and a reload: %q, message shown: %v", b.text("user"), b.has("flash"))
	}
	if c := b.sessionCookie(); c != nil {
		t.Errorf("the start page after logout stored a session cookie: %+v", c)
	}

	// GET /login shows the form on a page of its own.
	b.open(f.srv.URL + "/login")
	if u := b.text("user"); u != "Not logged in" || !b.has("login") || !b.styled() {
		t.Errorf("GET /login: %q, form shown %v, styled %v", u, b.has("login"), b.styled())
	}
	b.login("ada", false)
	if u := b.text("user"); u != "Logged in as ada" {
		t.Errorf("after logging in from /login: %q", u)
	}

	// The pages, their stylesheet, script and event stream fit the
	// Content-Security-Policy: Chromium blocked nothing.
	if v := console.matching("Content Security Policy", "Refused to"); len(v) > 0 {
		t.Errorf("Chromium blocked parts of the example's own pages:\n%s", strings.Join(v, "\n"))
	}
}

// TestBrowserRefusesFraming: a page of another origin on the same site (the
// same host, another port: a sibling the SameSite=Lax cookie reaches)
// frames /devices for a logged-in user, as a clickjacking page would to lay
// "Log out everywhere" under a button of its own. Chromium must refuse to
// show the app in the frame: the frame holds an error page, not the
// devices page, and the console reports the block.
func TestBrowserRefusesFraming(t *testing.T) {
	b := startBrowser(t)
	f := serve(t, pgsession.NewMemoryBackend(), false, false)
	console := b.recordConsole()
	b.open(f.srv.URL + "/login")
	b.login("ada", false)
	// Not framed, the devices page shows for this browser.
	b.open(f.srv.URL + "/devices")
	if !b.has("logout-everywhere") {
		t.Fatal("the devices page has no #logout-everywhere button")
	}

	target := f.srv.URL + "/devices"
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Win a prize</title>
<button>Claim your prize</button>
<iframe id="victim" src="%s" width="800" height="600" onload="window.framed = true"></iframe>`, target)
	}))
	t.Cleanup(attacker.Close)
	b.open(attacker.URL)
	value(b, "wait for the frame to load", chromedp.Poll[bool](`window.framed === true`))

	// What the frame shows, read inside the frame itself.
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	tree, err := chromedp.Call(ctx, page.GetFrameTree, cdp.Empty{})
	if err != nil {
		t.Fatalf("Page.getFrameTree: %v", err)
	}
	if n := len(tree.FrameTree.ChildFrames); n != 1 {
		t.Fatalf("the attacker's page has %d frames, want 1", n)
	}
	frame := tree.FrameTree.ChildFrames[0].Frame
	world, err := chromedp.Call(ctx, page.CreateIsolatedWorld, page.CreateIsolatedWorldParams{FrameID: frame.ID})
	if err != nil {
		t.Fatalf("Page.createIsolatedWorld in the frame: %v", err)
	}
	byValue := true
	res, err := chromedp.Call(ctx, runtime.Evaluate, runtime.EvaluateParams{
		Expression:    `document.getElementById("logout-everywhere") !== null`,
		ContextID:     world.ExecutionContextID,
		ReturnByValue: &byValue,
	})
	if err != nil || res.ExceptionDetails != nil || res.Result == nil {
		t.Fatalf("look into the frame: %v %+v", err, res.ExceptionDetails)
	}
	if shown := string(res.Result.Value) == "true"; shown || strings.HasPrefix(frame.URL, f.srv.URL) {
		t.Errorf("the attacker's page shows the devices page in a frame (frame at %q, #logout-everywhere present: %v): clickjacking is possible", frame.URL, shown)
	}
	if frame.UnreachableURL != target {
		t.Errorf("the frame's unreachable URL is %q, want %q (refused)", frame.UnreachableURL, target)
	}
	if blocked := console.matching("frame-ancestors", "X-Frame-Options"); len(blocked) == 0 {
		t.Errorf("Chromium logged no refused frame; console:\n%s", strings.Join(console.matching(""), "\n"))
	}
}

// TestBrowserSecureCookieNeedsLoopbackOrHTTPS checks what the example's
// documentation and startup warning say: over plain HTTP to a host that is
// not loopback, Chromium drops the Secure cookie, so the login is
// forgotten at once, and -insecure-cookie makes it work.
func TestBrowserSecureCookieNeedsLoopbackOrHTTPS(t *testing.T) {
	const host = "pgsession-example.test" // resolved to 127.0.0.1 by the browser alone
	b := startBrowser(t, chromedp.Flag("host-resolver-rules", "MAP "+host+" 127.0.0.1"))
	for _, insecure := range []bool{false, true} {
		f := serve(t, pgsession.NewMemoryBackend(), false, insecure)
		u, _ := url.Parse(f.srv.URL)
		u.Host = host + ":" + u.Port()
		b.open(u.String())
		b.login("ada", false)
		who, c := b.text("user"), b.sessionCookie()
		switch {
		case !insecure && (who != "Not logged in" || c != nil):
			t.Errorf("Secure cookie over http://%s: after login the page shows %q, stored cookie %+v; want not logged in and none", host, who, c)
		case insecure && (who != "Logged in as ada" || c == nil || c.Secure):
			t.Errorf("-insecure-cookie over http://%s: after login the page shows %q, stored cookie %+v; want logged in and a cookie without Secure", host, who, c)
		}
	}
}
