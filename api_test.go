package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// The session API's edges that the conformance suite does not reach: bad
// input to Pop, the nil Session, and how Load, FromContext, RotateKey and
// the middleware treat several sessions in one context.

func TestPopEdges(t *testing.T) {
	var nilSession *pgsession.Session
	var v any
	if ok, err := nilSession.Pop("k", &v); ok || !errors.Is(err, pgsession.ErrNoSession) {
		t.Errorf("nil Pop = %v, %v", ok, err)
	}
	if nilSession.Has("k") || nilSession.Keys() != nil {
		t.Error("nil Has or Keys")
	}

	env := pgsessiontest.NewEnv(t, pgsession.Config{})
	ctx, err := env.Manager.Load(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := pgsession.FromContext(ctx)
	_ = s.Set("n", "not a number")
	n := 7
	if ok, err := s.Pop("n", &n); !ok || err == nil || n != 7 || !s.Has("n") {
		t.Errorf("Pop into the wrong type = %v, %v, n %d, kept %v; want an error and the key kept", ok, err, n, s.Has("n"))
	}
	if ok, err := s.Pop("n", nil); !ok || err == nil || !s.Has("n") {
		t.Errorf("Pop into nil = %v, %v", ok, err)
	}
	var str string
	if ok, err := s.Pop("n", &str); !ok || err != nil || str != "not a number" || s.Has("n") {
		t.Errorf("Pop = %v, %v, %q", ok, err, str)
	}
	_ = s.Set("m", 1)
	if _, err := env.Manager.Save(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Pop("m", &n); ok || !errors.Is(err, pgsession.ErrAlreadySaved) || !s.Has("m") {
		t.Errorf("Pop after Save = %v, %v", ok, err)
	}
}

func TestSeveralSessionsInOneContext(t *testing.T) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			backend := newBackend(t)
			a := pgsessiontest.NewEnv(t, pgsession.Config{Backend: backend})
			b := pgsessiontest.NewEnv(t, pgsession.Config{Backend: backend, Cookie: pgsession.CookieConfig{Name: "__Host-b"}})
			bg := context.Background()
			if a.Manager.FromContext(bg) != nil || pgsession.FromContext(bg) != nil {
				t.Fatal("a session in an empty context")
			}
			tokA := save(t, a.Manager, load(t, a.Manager, bg, ""), "who", "a")
			tokB := save(t, b.Manager, load(t, b.Manager, bg, ""), "who", "b")

			// Chained: each Manager finds its own, FromContext the newest.
			ctx := load(t, b.Manager, load(t, a.Manager, bg, tokA), tokB)
			if who(t, pgsession.FromContext(ctx)) != "b" || who(t, a.Manager.FromContext(ctx)) != "a" || who(t, b.Manager.FromContext(ctx)) != "b" {
				t.Fatal("wrong sessions in the chain")
			}
			if a.Manager.FromContext(load(t, b.Manager, bg, "")) != nil {
				t.Error("a's FromContext found b's session")
			}

			// RotateKey is all or nothing: with a's session saved, it
			// rotates neither.
			if _, err := a.Manager.Save(ctx); err != nil {
				t.Fatal(err)
			}
			if err := pgsession.RotateKey(ctx); !errors.Is(err, pgsession.ErrAlreadySaved) {
				t.Errorf("RotateKey with one session saved: %v", err)
			}
			if tok, err := b.Manager.Save(ctx); err != nil || tok != tokB {
				t.Errorf("b after a refused RotateKey: %q, %v; want its token unchanged", tok, err)
			}

			// A second Load of one Manager hides its first session: only
			// the new one is seen, rotated and saved.
			first := load(t, a.Manager, bg, tokA)
			second := load(t, a.Manager, first, "")
			if a.Manager.FromContext(second).Len() != 0 {
				t.Fatal("the hidden session is visible")
			}
			if err := pgsession.RotateKey(second); err != nil {
				t.Fatal(err)
			}
			if tok, err := a.Manager.Save(first); err != nil || tok != tokA {
				t.Errorf("the hidden session was rotated: %q, %v", tok, err)
			}

			// Load does not take a deadline of a derived context as its own.
			job := load(t, a.Manager, bg, tokA)
			short, cancel := context.WithTimeout(job, time.Millisecond)
			_ = pgsession.FromContext(short).Set("step", 1)
			<-short.Done()
			cancel()
			if _, err := a.Manager.Save(job); err != nil {
				t.Errorf("Save after a sub-step's deadline: %v", err)
			}
		})
	}
}

// A handler inside the middleware may Load another session of the same
// Manager (a WebSocket handler serving a token it was sent): the two are
// saved independently, the loaded one by Save.
func TestLoadInsideMiddleware(t *testing.T) {
	env := pgsessiontest.NewEnv(t, pgsession.Config{})
	m := env.Manager
	tok := save(t, m, load(t, m, context.Background(), ""), "who", "other")
	var saved string
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FromContext(r.Context()).Set("who", "request")
		ctx := load(t, m, r.Context(), tok)
		_ = pgsession.FromContext(ctx).Set("seen", true)
		var err error
		if saved, err = m.Save(ctx); err != nil {
			t.Errorf("Save: %v", err)
		}
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var got string
	if !env.SavedValue(t, req, rec.Result(), "who", &got) || got != "request" {
		t.Errorf("the request's session: %q", got)
	}
	if saved != tok {
		t.Errorf("the loaded session's token changed")
	}
	ctx := load(t, m, context.Background(), tok)
	if who(t, pgsession.FromContext(ctx)) != "other" || !pgsession.FromContext(ctx).Has("seen") {
		t.Errorf("the loaded session: %v", pgsession.FromContext(ctx).Keys())
	}
}

// TestNestedMiddlewareClash: two Managers that would share a cookie fail
// the first request loudly, and so does the middleware on a request whose
// context carries the Manager's session from Load. (The same Manager's
// middleware twice passes through: see TestDoubleMiddleware.)
func TestNestedMiddlewareClash(t *testing.T) {
	for name, cfgs := range map[string][2]pgsession.CookieConfig{
		"same cookie name":          {{}, {}},
		"indicator is other name":   {{IndicatorName: "x"}, {Name: "X", Insecure: true}},
		"session from Manager.Load": {},
	} {
		t.Run(name, func(t *testing.T) {
			var got error
			handler := func(w http.ResponseWriter, _ *http.Request, err error) {
				got = err
				w.WriteHeader(http.StatusInternalServerError)
			}
			inner := pgsessiontest.NewEnv(t, pgsession.Config{Cookie: cfgs[0], ErrorHandler: handler}).Manager
			var h http.Handler
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if name == "session from Manager.Load" {
				h = inner.Middleware(http.NotFoundHandler())
				req = req.WithContext(load(t, inner, req.Context(), ""))
			} else {
				outer := pgsessiontest.NewEnv(t, pgsession.Config{Cookie: cfgs[1]}).Manager
				h = outer.Middleware(inner.Middleware(http.NotFoundHandler()))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusInternalServerError || !errors.Is(got, pgsession.ErrInvalidConfig) {
				t.Errorf("status %d, error %v", rec.Code, got)
			}
		})
	}
}

func load(t *testing.T, m *pgsession.Manager, ctx context.Context, token string) context.Context {
	t.Helper()
	ctx, err := m.Load(ctx, token)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return ctx
}

// save sets key to value in m's session in ctx and saves it.
func save(t *testing.T, m *pgsession.Manager, ctx context.Context, key, value string) string {
	t.Helper()
	if err := m.FromContext(ctx).Set(key, value); err != nil {
		t.Fatal(err)
	}
	tok, err := m.Save(ctx)
	if err != nil || tok == "" {
		t.Fatalf("Save = %q, %v", tok, err)
	}
	return tok
}

func who(t *testing.T, s *pgsession.Session) string {
	t.Helper()
	var v string
	if _, err := s.Get("who", &v); err != nil {
		t.Fatal(err)
	}
	return v
}
