package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// wantSecurityHeaders are the headers every response of the example carries.
var wantSecurityHeaders = map[string]string{
	"X-Frame-Options":         "DENY",
	"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "same-origin",
}

// failingSaves is a backend whose writes fail, so the middleware's
// ErrorHandler answers.
type failingSaves struct{ backend.Backend }

func (failingSaves) Apply(context.Context, backend.Action) error {
	return errors.New("the database is down")
}

// TestExampleSecurityHeaders checks that every kind of response carries the
// security headers, one request at a time with no redirect followed: pages,
// the login form, redirects, static files, the event stream, the health
// check, /debug/vars, 404s, the cross-origin refusal and the session
// middleware's error page.
func TestExampleSecurityHeaders(t *testing.T) {
	f := serve(t, pgsession.NewMemoryBackend(), true, false)
	broken := serve(t, failingSaves{pgsession.NewMemoryBackend()}, true, false)

	// One browser, logged in, that sees each response as it comes.
	c := f.client(t)
	c.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	sameOrigin := func(base string) http.Header {
		return http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {base}}
	}
	login := url.Values{"name": {"ada"}}
	check := func(c *client, method, path string, form url.Values, hdr http.Header, status int) {
		t.Helper()
		resp, body := c.do(method, path, form, hdr)
		if resp.StatusCode != status {
			t.Errorf("%s %s: %d, want %d (%.200s)", method, path, resp.StatusCode, status, body)
		}
		for name, want := range wantSecurityHeaders {
			if got := resp.Header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("%s %s (%d): %s %q, want %q", method, path, resp.StatusCode, name, got, want)
			}
		}
	}

	check(c, http.MethodGet, "/", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/login", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/devices", nil, nil, http.StatusSeeOther) // anonymous: to the start page
	check(c, http.MethodGet, "/static/app.css", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/static/app.js", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/static/missing.css", nil, nil, http.StatusNotFound)
	check(c, http.MethodGet, "/no/such/page", nil, nil, http.StatusNotFound)
	check(c, http.MethodPut, "/login", nil, nil, http.StatusMethodNotAllowed)
	check(c, http.MethodPost, "/login", login, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden)
	check(c, http.MethodPost, "/login", login, sameOrigin(f.srv.URL), http.StatusSeeOther)
	check(c, http.MethodGet, "/", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/login", nil, nil, http.StatusSeeOther) // logged in: to the start page
	check(c, http.MethodGet, "/devices", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/events", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/healthz", nil, nil, http.StatusOK)
	check(c, http.MethodGet, "/debug/vars", nil, nil, http.StatusOK)
	check(c, http.MethodPost, "/logout", nil, sameOrigin(f.srv.URL), http.StatusSeeOther)

	// A failed save clears the headers of the response it replaces; the
	// ErrorHandler sets them again.
	bc := broken.client(t)
	bc.c.CheckRedirect = c.c.CheckRedirect
	check(bc, http.MethodPost, "/login", login, sameOrigin(broken.srv.URL), http.StatusInternalServerError)
}

// TestExampleStaticFiles checks the stylesheet and script: served with
// their types (nosniff makes the browser insist on them) and without a
// session.
func TestExampleStaticFiles(t *testing.T) {
	f := serve(t, pgsession.NewMemoryBackend(), true, false)
	c := f.client(t)
	for path, typ := range map[string]string{"/static/app.css": "text/css; charset=utf-8", "/static/app.js": "text/javascript; charset=utf-8"} {
		resp, body := c.do(http.MethodGet, path, nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != typ || len(body) < 100 {
			t.Errorf("GET %s: %d, Content-Type %q, %d bytes; want 200, %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), typ)
		}
	}
	resp, _ := c.do(http.MethodGet, "/static/", nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /static/: %d, want 404 (no directory listing)", resp.StatusCode)
	}
	if st := f.m.Stats(); st != (pgsession.Stats{}) {
		t.Errorf("static files reached the session store: %+v", st)
	}
}

// inline matches what the Content-Security-Policy would block in a page:
// an inline script or style, a style attribute, an event handler
// attribute, a javascript: URL.
var inline = regexp.MustCompile(`(?i)<script>|<script[^>]*>[^<]|<style|\sstyle=|\son[a-z]+=|javascript:`)

// TestExamplePagesFitThePolicy checks every page for markup the policy
// refuses, and that each links the stylesheet. (The browser test checks
// that Chromium reports no violation.)
func TestExamplePagesFitThePolicy(t *testing.T) {
	f := serve(t, pgsession.NewMemoryBackend(), true, false)
	c := f.client(t)
	pages := map[string]string{"/ (anonymous)": c.page("/"), "/login": c.page("/login")}
	c.post("/login", url.Values{"name": {"ada"}})
	pages["/ (logged in)"] = c.page("/")
	pages["/devices"] = c.page("/devices")
	for name, body := range pages {
		if m := inline.FindString(body); m != "" {
			t.Errorf("%s holds %q, which the Content-Security-Policy blocks", name, m)
		}
		wantContains(t, name, body, `<link rel="stylesheet" href="/static/app.css">`, `<header class="bar">`)
	}
}

// TestExampleLoginPage: GET /login shows the form, which logs in.
func TestExampleLoginPage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		c := f.client(t)
		resp, body := c.do(http.MethodGet, "/login", nil, nil)
		if resp.StatusCode != http.StatusOK || len(resp.Header["Set-Cookie"]) != 0 {
			t.Fatalf("GET /login: %d, Set-Cookie %q; want 200 and no cookie", resp.StatusCode, resp.Header["Set-Cookie"])
		}
		wantContains(t, "GET /login", body, `<form class="stack" method="post" action="/login">`, `id="name"`, `id="remember"`, `<button id="login">`, anonymous)
		if st := f.m.Stats(); st != (pgsession.Stats{}) {
			t.Errorf("the login form reached the session store: %+v", st)
		}
		wantContains(t, "after logging in from /login", c.post("/login", url.Values{"name": {"ada"}}), "Logged in as <b>ada</b>")
		// Logged in, /login leads to the start page.
		resp, body = c.do(http.MethodGet, "/login", nil, nil)
		if u := resp.Request.URL; resp.StatusCode != http.StatusOK || u.Path != "/" || !strings.Contains(body, "Logged in as <b>ada</b>") {
			t.Errorf("GET /login when logged in: %d at %s", resp.StatusCode, u)
		}
	})
}
