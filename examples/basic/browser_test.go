package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/pgsession/pgsession"
)

// chromium returns the path of a Chromium or Chrome binary. Without one the
// test skips, except under CI=true, where .ci/run installs Debian's chromium
// and a missing browser is a failure.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH; CI must run the browser test (apt-get install -y chromium)")
	}
	t.Skip("SKIPPING browser test: no chromium, chromium-browser or google-chrome on PATH (apt-get install -y chromium)")
	return ""
}

// cookies returns the cookies the browser stores for the page, by name.
func cookies(ctx context.Context) (map[string]*network.Cookie, error) {
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		return nil, err
	}
	out := map[string]*network.Cookie{}
	for _, c := range res.Cookies {
		out[c.Name] = c
	}
	return out, nil
}

// TestBrowser drives examples/basic in headless Chromium: log in through the
// form, reload, log out, and check what the browser itself stored.
func TestBrowser(t *testing.T) {
	path := chromium(t)
	srv, _ := server(t, pgsession.NewMemoryBackend()) // TLS: the cookie is Secure

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.IgnoreCertErrors, // httptest's self-signed certificate
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first action starts the browser; later ones get a deadline each.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(id string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s: %v", id, err)
		}
		return s
	}
	stored := func() map[string]*network.Cookie {
		t.Helper()
		c, err := cookies(ctx)
		if err != nil {
			t.Fatalf("cookies: %v", err)
		}
		return c
	}
	submit := func(what, button string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := chromedp.Run(sctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.ID(button)))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	if v, u := text("visits"), text("user"); v != "Visits in this session: 1" || u != "Not logged in" {
		t.Fatalf("first page: %q, %q", v, u)
	}
	before := stored()[pgsession.DefaultCookieName]
	if before == nil || !before.HTTPOnly || !before.Secure || before.SameSite != network.CookieSameSiteLax || before.Path != "/" || before.Session {
		t.Fatalf("stored cookie %+v: want HttpOnly, Secure, SameSite=Lax, Path=/, persistent", before)
	}

	step("type the name", chromedp.SendKeys(chromedp.ID("name"), "ada"))
	submit("log in", "login")
	if v, u := text("visits"), text("user"); v != "Visits in this session: 2" || !strings.Contains(u, "ada") {
		t.Errorf("after login: %q, %q", v, u)
	}
	afterLogin := stored()[pgsession.DefaultCookieName]
	if afterLogin == nil || afterLogin.Value == before.Value {
		t.Fatalf("the session key did not change on login: %+v", afterLogin)
	}

	step("reload", chromedp.Reload())
	if v := text("visits"); v != "Visits in this session: 3" {
		t.Errorf("after reload: %q", v)
	}

	submit("log out", "logout")
	if u := text("user"); u != "Not logged in" {
		t.Errorf("after logout: %q", u)
	}
	// The logout expired the logged-in cookie; the page view after the
	// redirect started a new anonymous session under yet another key.
	if k := stored()[pgsession.DefaultCookieName]; k != nil && k.Value == afterLogin.Value {
		t.Errorf("the logged-in key survived logout")
	}
	if v := text("visits"); v != "Visits in this session: 1" {
		t.Errorf("after logout: %q", v)
	}
}
