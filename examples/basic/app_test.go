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
	"strings"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// server serves the example over TLS (the session cookie is Secure).
func server(t *testing.T, b pgsession.Backend) (*httptest.Server, *pgsession.Manager) {
	t.Helper()
	m, err := pgsession.New(pgsession.Config{
		Backend:      b,
		HashKeys:     [][]byte{[]byte(strings.Repeat("k", 32))},
		PrincipalKey: userKey,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(newApp(m, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv, m
}

// browser is a client with its own cookie jar, like one browser.
func browser(t *testing.T, srv *httptest.Server) *http.Client {
	c := *srv.Client() // a copy: srv.Client returns one shared client
	c.Jar, _ = cookiejar.New(nil)
	return &c
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	return body(t, resp, err)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) string {
	t.Helper()
	resp, err := c.PostForm(u, form)
	return body(t, resp, err)
}

func body(t *testing.T, resp *http.Response, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, b)
	}
	return string(b)
}

func sessionCookie(t *testing.T, c *http.Client, srv *httptest.Server) string {
	u, _ := url.Parse(srv.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == pgsession.DefaultCookieName {
			return ck.Value
		}
	}
	return ""
}

func TestExampleFlow(t *testing.T) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			srv, _ := server(t, newBackend(t))
			c := browser(t, srv)

			if got := get(t, c, srv.URL); !strings.Contains(got, "Visits in this session: 1") || !strings.Contains(got, "Not logged in") {
				t.Fatalf("first visit: %s", got)
			}
			anon := sessionCookie(t, c, srv)
			if got := get(t, c, srv.URL); !strings.Contains(got, "Visits in this session: 2") {
				t.Fatalf("second visit: %s", got)
			}

			got := post(t, c, srv.URL+"/login", url.Values{"name": {"ada"}})
			if !strings.Contains(got, "Logged in as <b>ada</b>") || !strings.Contains(got, "Visits in this session: 3") {
				t.Fatalf("after login: %s", got)
			}
			if k := sessionCookie(t, c, srv); k == "" || k == anon {
				t.Fatal("login did not rotate the session cookie")
			}
			if n := strings.Count(got, "<li>created"); n != 1 {
				t.Errorf("lists %d sessions, want 1", n)
			}

			// Server-sent events read the session; the cookie comes with the headers.
			resp, err := c.Get(srv.URL + "/events")
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Set-Cookie") == "" || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("events headers: %v", resp.Header)
			}
			sc := bufio.NewScanner(resp.Body)
			var events []string
			for sc.Scan() {
				if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					events = append(events, line)
				}
			}
			resp.Body.Close()
			if len(events) != 3 || !strings.Contains(events[2], `"user":"ada"`) {
				t.Errorf("events %q", events)
			}

			// The health check neither writes nor sets a cookie.
			resp, err = c.Get(srv.URL + "/healthz")
			if b := body(t, resp, err); b != "ok\n" || resp.Header.Get("Set-Cookie") != "" {
				t.Errorf("healthz: %q, Set-Cookie %q", b, resp.Header.Get("Set-Cookie"))
			}

			got = post(t, c, srv.URL+"/logout", nil)
			if !strings.Contains(got, "Not logged in") || !strings.Contains(got, "Visits in this session: 1") {
				t.Fatalf("after logout: %s", got)
			}
		})
	}
}

func TestExampleLogoutEverywhere(t *testing.T) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			srv, _ := server(t, newBackend(t))
			phone, laptop := browser(t, srv), browser(t, srv)
			post(t, phone, srv.URL+"/login", url.Values{"name": {"ada"}})
			got := post(t, laptop, srv.URL+"/login", url.Values{"name": {"ada"}})
			if n := strings.Count(got, "<li>created"); n != 2 {
				t.Fatalf("lists %d sessions, want 2", n)
			}
			post(t, laptop, srv.URL+"/logout-everywhere", nil)
			for _, c := range []*http.Client{phone, laptop} {
				if got := get(t, c, srv.URL); !strings.Contains(got, "Not logged in") {
					t.Errorf("still logged in: %s", got)
				}
			}
		})
	}
}

// State-changing routes refuse cross-origin requests (CSRF).
func TestExampleRefusesCrossOriginPost(t *testing.T) {
	srv, m := server(t, pgsession.NewMemoryBackend())
	for _, hdr := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}},
		{"Origin": {"https://evil.example"}},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader("name=mallory"))
		req.Header = hdr
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("cross-origin login with %v: %d, Set-Cookie %q; want 403 and no cookie", hdr, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}
	if st := m.Stats(); st.Inserts != 0 || st.Loads+st.Misses != 0 {
		t.Errorf("refused requests reached the session store: %+v", st)
	}
	// The same request from the same origin is fine.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader("name=ada"))
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := browser(t, srv).Do(req)
	if got := body(t, resp, err); !strings.Contains(got, "Logged in as <b>ada</b>") {
		t.Errorf("same-origin login: %s", got)
	}
}

// /debug/vars publishes the Manager's statistics through expvar.
func TestExampleStats(t *testing.T) {
	srv, m := server(t, pgsession.NewMemoryBackend())
	publishStats(m) // as main does
	c := browser(t, srv)
	get(t, c, srv.URL)
	get(t, c, srv.URL)
	var vars struct {
		Pgsession pgsession.Stats `json:"pgsession"`
	}
	if err := json.Unmarshal([]byte(get(t, c, srv.URL+"/debug/vars")), &vars); err != nil {
		t.Fatal(err)
	}
	// Loads: the second visit and the /debug/vars request itself.
	if vars.Pgsession.Inserts != 1 || vars.Pgsession.Updates != 1 || vars.Pgsession.Loads != 2 {
		t.Errorf("stats %+v, want 1 insert, 1 update, 2 loads", vars.Pgsession)
	}
}

func TestParseHashKeys(t *testing.T) {
	hexKey := strings.Repeat("ab", 32)
	keys, err := parseHashKeys(hexKey + ", " + "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=")
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 || string(keys[1]) != "abcdefghijklmnopqrstuvwxyz123456" {
		t.Fatalf("parseHashKeys = %q, %v", keys, err)
	}
	for _, bad := range []string{"zz", "abcd", hexKey + ",short"} {
		if _, err := parseHashKeys(bad); err == nil {
			t.Errorf("parseHashKeys(%q) succeeded", bad)
		}
	}
	if keys, err := parseHashKeys(" "); keys != nil || err != nil {
		t.Errorf("empty list = %v, %v", keys, err)
	}
}
