package otelsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/otelsession"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// The wrapped backend passes the conformance suite: wrapping changes no
// behaviour, on memory and PostgreSQL.
func TestWrappedConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
				return otelsession.Wrap(b.new(t), otelsession.WithTracerProvider(sdktrace.NewTracerProvider()),
					otelsession.WithMeterProvider(noopmetric.NewMeterProvider()))
			})
		})
	}
}

// Backends with each combination of the optional interfaces.
type (
	plain struct{ backend.Backend }
	withP struct {
		backend.Backend
		backend.PrincipalBackend
	}
	withC struct {
		backend.Backend
		*lockCleaner
	}
	withPC struct {
		backend.Backend
		backend.PrincipalBackend
		*lockCleaner
	}
	observing struct {
		backend.Backend
		mu     sync.Mutex
		events []backend.Event
	}
)

// lockCleaner is an ExclusiveCleaner that reports the lock taken elsewhere
// while held is set.
type lockCleaner struct {
	b    backend.Backend
	held atomic.Bool
}

func (c *lockCleaner) DeleteExpiredExclusive(ctx context.Context, cut backend.Cutoffs, limit int) (int, bool, error) {
	if c.held.Load() {
		return 0, false, nil
	}
	n, err := c.b.DeleteExpired(ctx, cut, limit)
	return n, true, err
}

func (o *observing) Observe(_ context.Context, e backend.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

// Wrap keeps exactly the optional interfaces of the backend it wraps, and
// each forwarded method works, in a span.
func TestWrapKeepsInterfaces(t *testing.T) {
	mem := func() *pgsession.MemoryBackend { return pgsession.NewMemoryBackend() }
	cases := []struct {
		name       string
		b          func(t *testing.T) backend.Backend
		principal  bool
		cleaner    bool
		observer   bool
		statements bool
	}{
		{"plain", func(*testing.T) backend.Backend { return plain{mem()} }, false, false, false, false},
		{"principal", func(*testing.T) backend.Backend { m := mem(); return withP{m, m} }, true, false, false, false},
		{"cleaner", func(*testing.T) backend.Backend { m := mem(); return withC{m, &lockCleaner{b: m}} }, false, true, false, false},
		{"principal and cleaner", func(*testing.T) backend.Backend { m := mem(); return withPC{m, m, &lockCleaner{b: m}} }, true, true, false, false},
		{"observer", func(*testing.T) backend.Backend { return &observing{Backend: plain{mem()}} }, false, false, true, false},
		{"memory backend", func(*testing.T) backend.Backend { return mem() }, true, false, false, false},
		{"postgres backend", func(t *testing.T) backend.Backend { return newPostgres(t) }, true, true, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inner := c.b(t)
			sr := tracetest.NewSpanRecorder()
			w := otelsession.Wrap(inner, otelsession.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))),
				otelsession.WithMeterProvider(noopmetric.NewMeterProvider()), otelsession.WithAttributes(attribute.String("pgsession.manager", "test")))
			if u, ok := w.(interface{ Unwrap() backend.Backend }); !ok || u.Unwrap() != inner {
				t.Errorf("Unwrap does not return the wrapped backend")
			}
			_, isObserver := w.(backend.Observer)
			_, isPrincipal := w.(backend.PrincipalBackend)
			ec, isCleaner := w.(backend.ExclusiveCleaner)
			_, hasMode := w.(interface {
				StatementMode(context.Context) (string, error)
			})
			if !isObserver || isPrincipal != c.principal || isCleaner != c.cleaner || hasMode {
				t.Fatalf("wrapped: observer %v, principal %v, cleaner %v, StatementMode %v; want true, %v, %v, false",
					isObserver, isPrincipal, isCleaner, hasMode, c.principal, c.cleaner)
			}
			// The same through pgsession's own check: a Manager on the
			// wrapped backend offers the principal-wide operations.
			ctx := context.Background()
			now := time.Now().Truncate(time.Microsecond)
			env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: w, PrincipalKey: "user"})
			loginAs(t, env, "ada")
			loginAs(t, env, "ada")
			n, err := env.Manager.DeleteByPrincipal(ctx, "ada")
			switch {
			case c.principal && (err != nil || n != 2):
				t.Errorf("DeleteByPrincipal through the Manager: %d, %v; want 2", n, err)
			case !c.principal && err == nil:
				t.Errorf("DeleteByPrincipal through the Manager on a backend without it: no error")
			}

			spans := func(name string) (out []sdktrace.ReadOnlySpan) {
				for _, s := range sr.Ended() {
					if s.Name() == name {
						out = append(out, s)
					}
				}
				return out
			}
			if c.principal {
				loginAs(t, env, "grace")
				recs, err := env.Manager.ListByPrincipal(ctx, "grace")
				if err != nil || len(recs) != 1 {
					t.Errorf("ListByPrincipal: %d, %v", len(recs), err)
				}
				if s := spans("pgsession.list_by_principal"); len(s) != 1 || !hasAttr(s[0], otelsession.ListedKey, attribute.IntValue(1)) {
					t.Errorf("list_by_principal spans: %v", s)
				}
				if s := spans("pgsession.delete_by_principal"); len(s) != 1 || !hasAttr(s[0], otelsession.DeletedKey, attribute.IntValue(2)) {
					t.Errorf("delete_by_principal spans: %v", s)
				}
			}
			// Cleanup, exclusive or not.
			cut := backend.Cutoffs{Now: now, IdleBefore: now.Add(-time.Hour), CreatedBefore: now.Add(-time.Hour)}
			if _, err := w.DeleteExpired(ctx, cut, 100); err != nil {
				t.Errorf("DeleteExpired: %v", err)
			}
			want := 1
			if c.cleaner {
				want++
				if _, ok, err := ec.DeleteExpiredExclusive(ctx, cut, 100); err != nil || !ok {
					t.Errorf("DeleteExpiredExclusive: %v, %v", ok, err)
				}
				if lc := cleanerOf(inner); lc != nil {
					want++
					lc.held.Store(true)
					if n, ok, err := ec.DeleteExpiredExclusive(ctx, cut, 100); err != nil || ok || n != 0 {
						t.Errorf("DeleteExpiredExclusive while held: %d, %v, %v", n, ok, err)
					}
				}
			}
			cleanups := spans("pgsession.delete_expired")
			if len(cleanups) != want {
				t.Fatalf("%d delete_expired spans, want %d", len(cleanups), want)
			}
			for i, s := range cleanups {
				if _, ok := attr(s, otelsession.DeletedKey); !ok || !hasAttr(s, "pgsession.manager", attribute.StringValue("test")) ||
					!hasAttr(s, otelsession.ExclusiveKey, attribute.BoolValue(i > 0)) {
					t.Errorf("%s %d: attributes %v", s.Name(), i, s.Attributes())
				}
				if i > 0 && !hasAttr(s, otelsession.AcquiredKey, attribute.BoolValue(i == 1)) {
					t.Errorf("%s %d: attributes %v", s.Name(), i, s.Attributes())
				}
			}

			// Observe is forwarded.
			if o, ok := inner.(*observing); ok {
				w.(backend.Observer).Observe(ctx, backend.Event{Found: backend.FoundLive})
				// Two from the logins, through the Manager; one sent here.
				if len(o.events) != 3 || o.events[0].Op != backend.OpInsert || o.events[2].Found != backend.FoundLive {
					t.Errorf("forwarded events: %v", o.events)
				}
			}
			// The statement mode is on the store's spans when it has one.
			for _, s := range spans("pgsession.save") {
				if _, ok := attr(s, otelsession.StatementModeKey); ok != c.statements {
					t.Errorf("save span: statement mode present %v, want %v", ok, c.statements)
				}
			}
		})
	}
}

// loginAs stores a session of user through the Manager's middleware.
func loginAs(t *testing.T, env *pgsessiontest.Env, user string) {
	t.Helper()
	h := env.Manager.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FromContext(r.Context()).Set("user", user)
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	if w.Code != http.StatusOK || len(w.Result().Cookies()) == 0 {
		t.Fatalf("login: status %d, cookies %v", w.Code, w.Result().Cookies())
	}
}

func cleanerOf(b backend.Backend) *lockCleaner {
	switch b := b.(type) {
	case withC:
		return b.lockCleaner
	case withPC:
		return b.lockCleaner
	}
	return nil
}

func hasAttr(s sdktrace.ReadOnlySpan, k attribute.Key, v attribute.Value) bool {
	got, ok := attr(s, k)
	return ok && got == v
}

// moder counts StatementMode calls.
type moder struct {
	backend.Backend
	calls atomic.Int32
}

func (m *moder) StatementMode(context.Context) (string, error) {
	m.calls.Add(1)
	return "plain statements (test)", nil
}

// The statement mode is read once, after the first statement, and is on
// every load and save span from then on, the first included.
func TestStatementModeReadOnce(t *testing.T) {
	inner := &moder{Backend: pgsession.NewMemoryBackend()}
	sr := tracetest.NewSpanRecorder()
	w := otelsession.Wrap(inner, otelsession.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))))
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: w})
	for range 5 {
		env.Login(t, map[string]any{"n": 1})
		if _, err := w.Load(context.Background(), backend.ID{1}, backend.SessionID{1}); !errors.Is(err, backend.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if n := inner.calls.Load(); n != 1 {
		t.Errorf("StatementMode called %d times, want 1", n)
	}
	if len(sr.Ended()) != 10 {
		t.Fatalf("%d spans, want 10", len(sr.Ended()))
	}
	for _, s := range sr.Ended() {
		if !hasAttr(s, otelsession.StatementModeKey, attribute.StringValue("plain statements (test)")) {
			t.Errorf("%s: attributes %v", s.Name(), s.Attributes())
		}
	}
}

// A store error is recorded on the save span, with status Error, and a
// concurrent deletion (ErrGone) is not an error.
func TestSaveErrors(t *testing.T) {
	store, fail := withFailure(pgsession.NewMemoryBackend())
	sr := tracetest.NewSpanRecorder()
	w := otelsession.Wrap(store, otelsession.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))))
	ctx := context.Background()
	gone := w.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: backend.ID{1}, OldSessionID: backend.SessionID{1}, Accessed: time.Now()})
	fail.Store(true)
	err := w.Apply(ctx, backend.Action{Op: backend.OpDelete, Old: backend.ID{1}, OldSessionID: backend.SessionID{1}})
	if !errors.Is(gone, backend.ErrGone) || !errors.Is(err, errDown) {
		t.Fatalf("errors %v, %v", gone, err)
	}
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	if s := spans[0]; s.Status().Code == codes.Error || !hasAttr(s, otelsession.SaveResultKey, attribute.StringValue("gone")) || len(s.Events()) != 0 {
		t.Errorf("gone: status %v, attributes %v, events %v", s.Status(), s.Attributes(), s.Events())
	}
	if s := spans[1]; s.Status().Code != codes.Error || !hasAttr(s, otelsession.SaveResultKey, attribute.StringValue("error")) ||
		!hasAttr(s, otelsession.OpKey, attribute.StringValue("delete")) || !hasAttr(s, otelsession.ErrorTypeKey, attribute.StringValue("_OTHER")) {
		t.Errorf("error: status %v, attributes %v", s.Status(), s.Attributes())
	}
}
