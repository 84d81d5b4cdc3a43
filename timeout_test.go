package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// A request that timed out saves nothing, with http.TimeoutHandler inside
// the middleware or outside it; a request that finishes in time saves as
// usual.
func TestTimeoutHandlerSavesNothing(t *testing.T) {
	const timeout = 100 * time.Millisecond
	placements := map[string]func(m *pgsession.Manager, h http.Handler) http.Handler{
		"inside": func(m *pgsession.Manager, h http.Handler) http.Handler {
			return m.Middleware(http.TimeoutHandler(h, timeout, "timed out"))
		},
		"outside": func(m *pgsession.Manager, h http.Handler) http.Handler {
			return http.TimeoutHandler(m.Middleware(h), timeout, "timed out")
		},
	}
	for backendName, newBackend := range pgtest.Backends() {
		for placement, wrap := range placements {
			for _, slow := range []bool{true, false} {
				for _, fresh := range []bool{true, false} {
					name := fmt.Sprintf("%s/%s/slow=%v/fresh=%v", backendName, placement, slow, fresh)
					t.Run(name, func(t *testing.T) {
						env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: newBackend(t)})
						done := make(chan error, 1) // the handler's late Set, once it returns
						h := wrap(env.Manager, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							s := pgsession.FromContext(r.Context())
							if err := s.Set("n", 2); err != nil {
								t.Errorf("Set: %v", err)
							}
							if !slow {
								fmt.Fprint(w, "ok")
								done <- nil
								return
							}
							<-r.Context().Done() // the TimeoutHandler's deadline
							time.Sleep(10 * time.Millisecond)
							err := s.Set("n", 3)
							fmt.Fprint(w, "late")
							done <- err
						}))
						req := httptest.NewRequest(http.MethodPost, "/", nil)
						if !fresh {
							req = env.Request(t, req, map[string]any{"n": 1})
						}
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						lateSet := <-done
						time.Sleep(20 * time.Millisecond) // let the middleware finish after the handler
						resp := rec.Result()
						st := env.Manager.Stats()
						var n int
						stored := env.SavedValue(t, req, resp, "n", &n)
						if slow {
							if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Set-Cookie") != "" {
								t.Errorf("timed out: status %d, Set-Cookie %q; want 503 and no cookie", resp.StatusCode, resp.Header.Get("Set-Cookie"))
							}
							if fresh && stored || !fresh && n != 1 {
								t.Errorf("timed out: stored n=%d (present %v), want the session as it was", n, stored)
							}
							if st.Inserts+st.Updates+st.Rotations+st.Deletes != 0 || st.Errors != 0 {
								t.Errorf("timed out: stats %+v, want no write and no error", st)
							}
							// Inside, the TimeoutHandler's 503 started the response, so
							// a later change fails; outside, the save is still to come.
							if placement == "inside" && !errors.Is(lateSet, pgsession.ErrAlreadySaved) {
								t.Errorf("Set after the timeout = %v, want ErrAlreadySaved", lateSet)
							}
							return
						}
						// A new session sends its cookie; a write to one keeps its key, and sends none.
						if resp.StatusCode != http.StatusOK || (len(resp.Cookies()) != 0) != fresh || !stored || n != 2 {
							t.Errorf("in time: status %d, cookies %v, stored n=%d (%v); want 200, a cookie only for a new session, and n=2", resp.StatusCode, resp.Cookies(), n, stored)
						}
					})
				}
			}
		}
	}
}

// A client that goes away before the response starts cancels the request's
// context: the same rule, nothing is saved and no cookie is set.
func TestClientGoneSavesNothing(t *testing.T) {
	for backendName, newBackend := range pgtest.Backends() {
		t.Run(backendName, func(t *testing.T) {
			env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: newBackend(t)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := env.Manager.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = pgsession.FromContext(r.Context()).Set("n", 2)
				cancel() // the client disconnects
				fmt.Fprint(w, "done")
			}))
			req := env.Request(t, httptest.NewRequestWithContext(ctx, http.MethodPost, "/", nil), map[string]any{"n": 1})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var n int
			if env.SavedValue(t, req, rec.Result(), "n", &n); n != 1 || rec.Header().Get("Set-Cookie") != "" {
				t.Errorf("stored n=%d, Set-Cookie %q; want n=1 and no cookie", n, rec.Header().Get("Set-Cookie"))
			}
			if st := env.Manager.Stats(); st.Updates != 0 || st.Errors != 0 {
				t.Errorf("stats %+v, want no write and no error", st)
			}
		})
	}
}
