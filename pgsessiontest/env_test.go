package pgsessiontest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// The handler under test: counts a logged-in user's visits, logs out on
// POST /logout.
func visits(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	if r.Method == http.MethodPost {
		_ = s.Clear()
		_ = pgsession.RotateKey(r.Context())
		return
	}
	var n int
	if ok, _ := s.Get("user", new(string)); !ok {
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return
	}
	_, _ = s.Get("visits", &n)
	_ = s.Set("visits", n+1)
	fmt.Fprint(w, n+1)
}

func TestEnv(t *testing.T) {
	env := pgsessiontest.NewEnv(t, pgsession.Config{IdleTimeout: time.Hour})
	h := env.Manager.Middleware(http.HandlerFunc(visits))

	req := env.Request(t, httptest.NewRequest(http.MethodGet, "/", nil), map[string]any{"user": "ada", "visits": 41})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var n int
	if rec.Body.String() != "42" || !env.SavedValue(t, req, rec.Result(), "visits", &n) || n != 42 {
		t.Fatalf("body %q, saved visits %d", rec.Body, n)
	}

	// The clock is the Manager's: an hour later the session has expired.
	env.Clock.Advance(time.Hour)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || env.Saved(t, req, rec.Result()) != nil {
		t.Errorf("after the idle timeout: %d, saved %v", rec.Code, env.Saved(t, req, rec.Result()))
	}

	// Logout deletes the session.
	req = env.Request(t, httptest.NewRequest(http.MethodPost, "/logout", nil), map[string]any{"user": "ada"})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if saved := env.Saved(t, req, rec.Result()); saved != nil {
		t.Errorf("after logout: %v", saved)
	}
	if ck := rec.Result().Cookies(); len(ck) != 1 || ck[0].Name != env.CookieName() || ck[0].MaxAge >= 0 {
		t.Errorf("logout cookies %v", ck)
	}
}
