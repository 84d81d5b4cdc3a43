package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
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

// submit clicks the button with the given id, waits for the page the form
// leads to, and fails unless it answers 200 at path.
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
		if c.Name == sessionCookieName || c.Name == pgsession.DefaultCookieName { // Secure, or -insecure-cookie
			if found != nil {
				b.t.Fatalf("two session cookies: %+v and %+v", found, c)
			}
			found = c
		}
	}
	return found
}

// TestBrowser drives the example in headless Chromium the way `go run
// ./examples/basic` serves it: plain HTTP on 127.0.0.1, Secure cookie. It
// logs in through the form, reloads, streams events, logs out, and checks
// what the browser itself stored.
func TestBrowser(t *testing.T) {
	b := startBrowser(t)
	f := serve(t, pgsession.NewMemoryBackend(), false, false)
	if !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("httptest serves %s, want http://127.0.0.1", f.srv.URL)
	}

	b.open(f.srv.URL)
	if v, u := b.text("visits"), b.text("user"); v != "Visits in this session: 1" || u != "Not logged in" {
		t.Fatalf("first page: %q, %q", v, u)
	}
	// Chromium keeps a Secure cookie over http:// on a loopback address.
	anon := b.sessionCookie()
	if anon == nil {
		t.Fatal("the browser stored no session cookie from http://127.0.0.1")
	}
	if !anon.HTTPOnly || !anon.Secure || anon.SameSite != network.CookieSameSiteLax || anon.Path != "/" || anon.Domain != "127.0.0.1" || anon.Session {
		t.Errorf("stored cookie %+v: want HttpOnly, Secure, SameSite=Lax, Path=/, host 127.0.0.1, persistent", anon)
	}
	if exp := time.Unix(int64(anon.Expires), 0); exp.Before(time.Now().Add(pgsession.DefaultIdleTimeout - time.Hour)) {
		t.Errorf("cookie expires at %v, want about %v from now", exp, pgsession.DefaultIdleTimeout)
	}

	// Log in through the form.
	b.do("type the name", chromedp.SendKeys(chromedp.ID("name"), "ada"))
	b.submit("login", "/")
	if v, u := b.text("visits"), b.text("user"); v != "Visits in this session: 2" || u != "Logged in as ada" {
		t.Errorf("after login: %q, %q", v, u)
	}
	loggedIn := b.sessionCookie()
	if loggedIn == nil || loggedIn.Value == anon.Value {
		t.Fatalf("login left the stored cookie %+v", loggedIn)
	}
	// The key changed: the cookie from before the login leads nowhere now.
	wantContains(t, "the cookie from before the login", f.replay(t, anon.Value), visits("1"), anonymous)

	b.do("reload", chromedp.Reload())
	if v, u := b.text("visits"), b.text("user"); v != "Visits in this session: 3" || u != "Logged in as ada" {
		t.Errorf("after reload: %q, %q", v, u)
	}

	// Server-sent events through EventSource, with the session cookie.
	b.do("start the stream", chromedp.Click(chromedp.ID("stream")))
	value(b, "wait for the events", chromedp.Poll[bool](`document.querySelectorAll("#events li").length >= `+strconv.Itoa(eventCount)))
	if ev := b.text("events"); strings.Count(ev, `"user":"ada"`) != eventCount || !strings.Contains(ev, `"streams":1`) {
		t.Errorf("events on the page: %q", ev)
	}

	// Log out: the browser drops the cookie.
	b.submit("logout", "/logged-out")
	if u := b.text("user"); u != "You are logged out." {
		t.Errorf("after logout: %q", u)
	}
	if c := b.sessionCookie(); c != nil {
		t.Errorf("the browser still stores a session cookie after logout: %+v", c)
	}
	wantContains(t, "the cookie from before the logout", f.replay(t, loggedIn.Value), visits("1"), anonymous)

	b.do("back to the start page", chromedp.Click(chromedp.ID("home")), chromedp.WaitVisible(chromedp.ID("visits")))
	if v, u := b.text("visits"), b.text("user"); v != "Visits in this session: 1" || u != "Not logged in" {
		t.Errorf("start page after logout: %q, %q", v, u)
	}
}

// TestBrowserSecureCookieNeedsLoopbackOrHTTPS checks what the example's
// documentation and startup warning say: over plain HTTP to a host that is
// not loopback, Chromium drops the Secure cookie, so the login would be
// forgotten, and -insecure-cookie makes it work.
func TestBrowserSecureCookieNeedsLoopbackOrHTTPS(t *testing.T) {
	const host = "pgsession-example.test" // resolved to 127.0.0.1 by the browser alone
	b := startBrowser(t, chromedp.Flag("host-resolver-rules", "MAP "+host+" 127.0.0.1"))
	for _, insecure := range []bool{false, true} {
		f := serve(t, pgsession.NewMemoryBackend(), false, insecure)
		u, _ := url.Parse(f.srv.URL)
		u.Host = host + ":" + u.Port()
		b.open(u.String())
		b.open(u.String())
		v, c := b.text("visits"), b.sessionCookie()
		switch {
		case !insecure && (v != "Visits in this session: 1" || c != nil):
			t.Errorf("Secure cookie over http://%s: second visit shows %q, stored cookie %+v; want 1 and none", host, v, c)
		case insecure && (v != "Visits in this session: 2" || c == nil || c.Secure):
			t.Errorf("-insecure-cookie over http://%s: second visit shows %q, stored cookie %+v; want 2 and a cookie without Secure", host, v, c)
		}
	}
}
