package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
)

var quiet = slog.New(slog.DiscardHandler)

// fixture is the API served by httptest on one backend.
type fixture struct {
	srv *httptest.Server
	m   *pgsession.Manager
}

// serve serves the API on b.
func serve(t *testing.T, b backend.Backend) *fixture {
	t.Helper()
	m, err := newManager(b, []byte(strings.Repeat("k", 32)), quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newAPI(m, quiet))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, m: m}
}

// forEachBackend runs test on the memory backend and on PostgreSQL through
// lib/pq and pgx, as parallel subtests.
func forEachBackend(t *testing.T, test func(t *testing.T, f *fixture)) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, serve(t, newBackend(t)))
		})
	}
}

// call sends a request with an optional bearer token and, for a body, the
// JSON content type; it decodes the JSON answer.
func (f *fixture) call(t *testing.T, method, path, token, body string) (int, map[string]any, *http.Response) {
	t.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		hdr.Set("Content-Type", "application/json")
	}
	return f.send(t, method, path, hdr, body)
}

// send sends a request with exactly the given headers and decodes the JSON
// answer.
func (f *fixture) send(t *testing.T, method, path string, hdr http.Header, body string) (int, map[string]any, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	// The API answers in JSON; CrossOriginProtection and ServeMux's 404
	// answer in plain text.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, b)
		}
	} else if resp.StatusCode == http.StatusOK {
		t.Fatalf("%s %s: 200 with Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, out, resp
}

// login logs in as name and returns the token.
func (f *fixture) login(t *testing.T, name string) string {
	t.Helper()
	code, out, resp := f.call(t, http.MethodPost, "/login", "", `{"name":"`+name+`"}`)
	token, _ := out["token"].(string)
	if code != http.StatusOK || token == "" {
		t.Fatalf("login: %d %v", code, out)
	}
	if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
		t.Errorf("login set cookies %q; the API hands out tokens only", sc)
	}
	return token
}

func TestAPIBearerFlow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		if code, _, _ := f.call(t, "GET", "/me", "", ""); code != http.StatusUnauthorized {
			t.Fatalf("anonymous /me: %d", code)
		}
		phone, laptop := f.login(t, "ada"), f.login(t, "ada")
		for i := 1; i <= 2; i++ {
			code, out, resp := f.call(t, "GET", "/me", phone, "")
			if code != http.StatusOK || out["user"] != "ada" || out["calls"] != float64(i) || len(resp.Header["Set-Cookie"]) != 0 {
				t.Fatalf("/me #%d: %d %v, Set-Cookie %q", i, code, out, resp.Header["Set-Cookie"])
			}
		}
		// Logging out one device kills that token only.
		if code, _, _ := f.call(t, "POST", "/logout", phone, ""); code != http.StatusOK {
			t.Fatalf("logout: %d", code)
		}
		if code, _, _ := f.call(t, "GET", "/me", phone, ""); code != http.StatusUnauthorized {
			t.Errorf("logged-out token still works: %d", code)
		}
		if code, _, _ := f.call(t, "GET", "/me", laptop, ""); code != http.StatusOK {
			t.Errorf("the other device was logged out: %d", code)
		}
		// Log out everywhere.
		third := f.login(t, "ada")
		if code, out, _ := f.call(t, "POST", "/logout-everywhere", laptop, ""); code != http.StatusOK || out["revoked"] != float64(2) {
			t.Fatalf("logout-everywhere: %d %v", code, out)
		}
		for _, tok := range []string{laptop, third} {
			if code, _, _ := f.call(t, "GET", "/me", tok, ""); code != http.StatusUnauthorized {
				t.Errorf("token survived logout-everywhere: %d", code)
			}
		}
	})
}

// The login CSRF of issue 10.4: another site's <form enctype="text/plain">
// posts {"name":"attacker","pad":"="} to /login from the victim's browser.
// It is refused before the session store, and sets no cookie, whether or
// not the browser sends Fetch metadata.
func TestAPIRefusesCrossSiteFormLogin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		const body = `{"name":"attacker","pad":"="}` // a text/plain form's "name=value"
		for _, hdr := range []http.Header{
			{"Content-Type": {"text/plain"}, "Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}},
			{"Content-Type": {"text/plain"}, "Origin": {"https://evil.example"}},
			{"Content-Type": {"text/plain"}}, // an old browser: neither header
			{"Content-Type": {"application/x-www-form-urlencoded"}},
			{"Content-Type": {"multipart/form-data; boundary=x"}},
			{"Content-Type": {"application/json"}, "Sec-Fetch-Site": {"cross-site"}}, // a cross-origin fetch
			{}, // a body with no type at all
		} {
			before := f.m.Stats()
			code, out, resp := f.send(t, http.MethodPost, "/login", hdr, body)
			if code != http.StatusUnsupportedMediaType && code != http.StatusForbidden {
				t.Errorf("POST /login with %v: %d %v; want 415 or 403", hdr, code, out)
			}
			if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
				t.Errorf("POST /login with %v set cookies %q", hdr, sc)
			}
			if after := f.m.Stats(); after != before {
				t.Errorf("POST /login with %v reached the session store: %+v, then %+v", hdr, before, after)
			}
		}
	})
}

// The API reads no cookie: a browser's session cookie, even one holding a
// valid signed key, gets no session; only the bearer token does. And it
// sets none, even for a request without a token.
func TestAPIIgnoresCookies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		token := f.login(t, "ada")
		for _, name := range []string{"session-key", "__Host-session-key", "__Secure-session-key"} {
			hdr := http.Header{"Cookie": {(&http.Cookie{Name: name, Value: token}).String()}}
			code, out, resp := f.send(t, http.MethodGet, "/me", hdr, "")
			if code != http.StatusUnauthorized {
				t.Errorf("GET /me with the token as cookie %s: %d %v; want 401", name, code, out)
			}
			if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
				t.Errorf("GET /me with cookie %s set cookies %q", name, sc)
			}
			code, out, _ = f.send(t, http.MethodPost, "/logout", hdr, "")
			if code != http.StatusOK {
				t.Errorf("POST /logout with cookie %s: %d %v", name, code, out)
			}
		}
		// The cookie logged nothing out: the token still works.
		if code, out, _ := f.call(t, http.MethodGet, "/me", token, ""); code != http.StatusOK || out["user"] != "ada" {
			t.Errorf("the token after the cookie requests: %d %v", code, out)
		}
		// No request without a token gets a cookie, or a session.
		before := f.m.Stats()
		for _, path := range []string{"/me", "/nowhere"} {
			if _, _, resp := f.send(t, http.MethodGet, path, nil, ""); len(resp.Header["Set-Cookie"]) != 0 {
				t.Errorf("GET %s without a token set cookies %q", path, resp.Header["Set-Cookie"])
			}
		}
		if after := f.m.Stats(); after.Inserts != before.Inserts || after.Updates != before.Updates {
			t.Errorf("requests without a token wrote sessions: %+v, then %+v", before, after)
		}
	})
}

// Responses depend on the Authorization header, so they say so to caches.
func TestAPIVaryAuthorization(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		token := f.login(t, "ada")
		for _, tok := range []string{token, ""} {
			_, _, resp := f.call(t, http.MethodGet, "/me", tok, "")
			if !varies(resp.Header, "Authorization") {
				t.Errorf("GET /me (token %v): Vary %q, want Authorization", tok != "", resp.Header.Values("Vary"))
			}
		}
	})
}

// varies reports whether h's Vary headers name field.
func varies(h http.Header, field string) bool {
	for _, v := range h.Values("Vary") {
		if slices.ContainsFunc(strings.Split(v, ","), func(f string) bool {
			f = strings.TrimSpace(f)
			return strings.EqualFold(f, field) || f == "*"
		}) {
			return true
		}
	}
	return false
}
