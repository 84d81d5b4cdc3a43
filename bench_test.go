package pgsession_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// The per-request cost of the middleware, without HTTP networking: run with
//
//	go test -run '^$' -bench BenchmarkMiddleware -benchmem
//
// The PostgreSQL variants need a server (see scripts/test); the clock stays
// still, so the read path stays within the timeout resolution and writes
// nothing, as read-mostly traffic does.

// benchMiddleware serves handler for b.N requests that carry a session
// holding values (none when values is nil).
func benchMiddleware(b *testing.B, values map[string]any, handler http.HandlerFunc) {
	for name, newBackend := range pgtest.Backends() {
		b.Run(name, func(b *testing.B) {
			env := pgsessiontest.NewEnv(b, pgsession.Config{Backend: newBackend(b)})
			h := env.Manager.Middleware(handler)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if values != nil {
				req = env.Request(b, req, values)
			}
			before := env.Manager.Stats()
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			st := env.Manager.Stats()
			b.ReportMetric(float64(st.Inserts+st.Updates+st.Rotations+st.Deletes-
				before.Inserts-before.Updates-before.Rotations-before.Deletes)/float64(b.N), "writes/op")
		})
	}
}

// BenchmarkMiddlewareAnonymous: no cookie, the handler never touches the
// session: no query at all.
func BenchmarkMiddlewareAnonymous(b *testing.B) {
	benchMiddleware(b, nil, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
}

// BenchmarkMiddlewareRead: a logged-in request that reads a value: one
// indexed SELECT, no write.
func BenchmarkMiddlewareRead(b *testing.B) {
	benchMiddleware(b, map[string]any{"user_id": 42, "n": 1}, func(w http.ResponseWriter, r *http.Request) {
		var id int
		if _, err := pgsession.FromContext(r.Context()).Get("user_id", &id); err != nil || id != 42 {
			http.Error(w, "bad session", http.StatusInternalServerError)
		}
	})
}

// BenchmarkMiddlewareWrite: a logged-in request that increments a counter:
// one SELECT and one UPDATE.
func BenchmarkMiddlewareWrite(b *testing.B) {
	benchMiddleware(b, map[string]any{"user_id": 42, "n": 1}, func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var n int
		if _, err := s.Get("n", &n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := s.Set("n", n+1); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}
