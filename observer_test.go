package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// recorder is a Backend that observes: it records each Event, and fails
// loads on demand.
type recorder struct {
	*pgsession.MemoryBackend
	mu       sync.Mutex
	events   []backend.Event
	failLoad bool
}

func (r *recorder) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	r.mu.Lock()
	fail := r.failLoad
	r.mu.Unlock()
	if fail {
		return nil, errors.New("injected load failure")
	}
	return r.MemoryBackend.Load(ctx, id, sid)
}

func (r *recorder) Observe(_ context.Context, e backend.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) last(t *testing.T) backend.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		t.Fatal("no event observed")
	}
	e := r.events[len(r.events)-1]
	r.events = nil
	return e
}

// A Backend that implements backend.Observer sees, once per request, what
// the load found and what the save did: a scripted sequence through the
// middleware.
func TestObserverSeesEachRequest(t *testing.T) {
	rec := &recorder{MemoryBackend: pgsession.NewMemoryBackend()}
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: rec, PrincipalKey: "user", Cookie: pgsession.CookieConfig{Insecure: true}})
	h := env.Manager.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		switch r.URL.Path {
		case "/login":
			_ = s.Set("user", "ada")
			_ = pgsession.RotateKey(r.Context())
		case "/write":
			_ = s.Set("n", time.Now().UnixNano())
		case "/freeze":
			_ = s.Set("n", 0)
			_ = pgsession.FreezeSession(r.Context())
		}
	}))
	var cookie string
	do := func(path string, cookies ...string) *http.Response {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, path, nil)
		for _, c := range cookies {
			req.Header.Add("Cookie", c)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		resp := w.Result()
		for _, c := range resp.Cookies() {
			if c.Name == env.Manager.CookieName() && c.MaxAge >= 0 {
				cookie = c.Name + "=" + c.Value
			}
		}
		return resp
	}
	want := func(name string, got, want backend.Event) {
		t.Helper()
		if (got.Err != nil) != (want.Err != nil) {
			t.Errorf("%s: Err %v, want an error: %v", name, got.Err, want.Err != nil)
		}
		got.Err, want.Err = nil, nil
		if got != want {
			t.Errorf("%s: event %+v, want %+v", name, got, want)
		}
	}
	fail := errors.New("any")

	do("/read")
	want("anonymous read", rec.last(t), backend.Event{})
	do("/login")
	want("login", rec.last(t), backend.Event{Op: backend.OpInsert})
	login := cookie
	do("/write", login)
	want("write", rec.last(t), backend.Event{Found: backend.FoundLive, Op: backend.OpUpdate})
	do("/read", login)
	want("read within the resolution", rec.last(t), backend.Event{Found: backend.FoundLive, Skipped: true})
	do("/freeze", login)
	want("frozen", rec.last(t), backend.Event{Found: backend.FoundLive, Frozen: true})
	do("/login", login)
	want("login again: a renewal (same user)", rec.last(t), backend.Event{Found: backend.FoundLive, Op: backend.OpRotate, Renewal: true})
	do("/read", login)
	want("the predecessor of a renewal", rec.last(t), backend.Event{Found: backend.FoundRenewed, Skipped: true})
	do("/read", login, cookie)
	want("a key and its predecessor: the session", rec.last(t), backend.Event{Found: backend.FoundLive, Skipped: true})
	do("/read", login, cookie, anonCookie(t, env))
	want("keys of two sessions", rec.last(t), backend.Event{Found: backend.FoundAmbiguous})
	rec.mu.Lock()
	rec.failLoad = true
	rec.mu.Unlock()
	if resp := do("/read", cookie); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("failed load: status %d", resp.StatusCode)
	}
	want("a database error", rec.last(t), backend.Event{Found: backend.FoundNone, Err: fail})
	rec.mu.Lock()
	rec.failLoad = false
	rec.mu.Unlock()
	env.Clock.Advance(pgsession.DefaultIdleTimeout)
	do("/read", cookie)
	want("expired", rec.last(t), backend.Event{Found: backend.FoundExpired, Op: backend.OpDelete})
	if resp := do("/read", cookie); len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Errorf("a key that names nothing: cookies %v, want it expired", resp.Cookies())
	}
	want("a key that names nothing", rec.last(t), backend.Event{Found: backend.FoundUnknown})

	// A write refused across a login: the pre-login key of an anonymous
	// session.
	cookie = ""
	do("/write")
	anon := cookie
	do("/login", anon)
	rec.last(t)
	if resp := do("/write", anon); resp.StatusCode != http.StatusConflict {
		t.Errorf("a write with a retired key: status %d, want 409", resp.StatusCode)
	}
	want("refused", rec.last(t), backend.Event{Found: backend.FoundRetired, Refused: true, Err: fail})
}

// anonCookie returns the cookie of another live session.
func anonCookie(t *testing.T, env *pgsessiontest.Env) string {
	t.Helper()
	c := env.Login(t, map[string]any{"other": 1})
	return c.Name + "=" + c.Value
}
