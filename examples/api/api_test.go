package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pgsession/pgsession/internal/pgtest"
)

// call sends a request with an optional bearer token and decodes the JSON
// answer; it also reports whether a cookie was set.
func call(t *testing.T, srv *httptest.Server, method, path, token, body string) (int, map[string]any, bool) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out, resp.Header.Get("Set-Cookie") != ""
}

func TestAPIBearerFlow(t *testing.T) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			m, err := newManager(newBackend(t), []byte(strings.Repeat("k", 32)), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(newAPI(m))
			defer srv.Close()

			if code, _, _ := call(t, srv, "GET", "/me", "", ""); code != http.StatusUnauthorized {
				t.Fatalf("anonymous /me: %d", code)
			}
			_, out, _ := call(t, srv, "POST", "/login", "", `{"name":"ada"}`)
			phone, _ := out["token"].(string)
			_, out, _ = call(t, srv, "POST", "/login", "", `{"name":"ada"}`)
			laptop, _ := out["token"].(string)
			if phone == "" || laptop == "" {
				t.Fatalf("login gave no token: %v", out)
			}
			for i := 1; i <= 2; i++ {
				code, out, cookie := call(t, srv, "GET", "/me", phone, "")
				if code != http.StatusOK || out["user"] != "ada" || out["calls"] != float64(i) || cookie {
					t.Fatalf("/me #%d: %d %v, cookie %v", i, code, out, cookie)
				}
			}
			// Logging out one device kills that token only.
			if code, _, _ := call(t, srv, "POST", "/logout", phone, ""); code != http.StatusOK {
				t.Fatalf("logout: %d", code)
			}
			if code, _, _ := call(t, srv, "GET", "/me", phone, ""); code != http.StatusUnauthorized {
				t.Errorf("logged-out token still works: %d", code)
			}
			if code, _, _ := call(t, srv, "GET", "/me", laptop, ""); code != http.StatusOK {
				t.Errorf("the other device was logged out: %d", code)
			}
			// Log out everywhere.
			_, out, _ = call(t, srv, "POST", "/login", "", `{"name":"ada"}`)
			third, _ := out["token"].(string)
			if code, out, _ := call(t, srv, "POST", "/logout-everywhere", laptop, ""); code != http.StatusOK || out["revoked"] != float64(2) {
				t.Fatalf("logout-everywhere: %d %v", code, out)
			}
			for _, tok := range []string{laptop, third} {
				if code, _, _ := call(t, srv, "GET", "/me", tok, ""); code != http.StatusUnauthorized {
					t.Errorf("token survived logout-everywhere: %d", code)
				}
			}
		})
	}
}
