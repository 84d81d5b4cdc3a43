package pgsession_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pgsession/pgsession"
)

// captureHandler is a slog.Handler that keeps every record.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// count returns how many records at level have a message containing substr.
func (h *captureHandler) count(level slog.Level, substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

func TestWarnSecureCookieOverPlainHTTP(t *testing.T) {
	const warning = "Secure session cookie was sent over plain HTTP"
	tests := []struct {
		name     string
		url      string
		header   http.Header
		insecure bool
		set      bool // the handler creates a session, so a cookie is set
		want     int  // warnings after three requests
	}{
		{name: "plain HTTP to a remote host", url: "http://app.internal.test/login", set: true, want: 1},
		{name: "with a port", url: "http://app.internal.test:8080/login", set: true, want: 1},
		{name: "no cookie set", url: "http://app.internal.test/", set: false, want: 0},
		{name: "HTTPS", url: "https://app.internal.test/login", set: true, want: 0},
		{name: "127.0.0.1", url: "http://127.0.0.1:8080/login", set: true, want: 0},
		{name: "127.0.0.2", url: "http://127.0.0.2/login", set: true, want: 0},
		{name: "localhost", url: "http://localhost:8080/login", set: true, want: 0},
		{name: "LOCALHOST.", url: "http://LOCALHOST./login", set: true, want: 0},
		{name: "app.localhost", url: "http://app.localhost/login", set: true, want: 0},
		{name: "::1", url: "http://[::1]:8080/login", set: true, want: 0},
		{name: "X-Forwarded-Proto https", url: "http://app.internal.test/login", set: true,
			header: http.Header{"X-Forwarded-Proto": {"https"}}, want: 0},
		{name: "X-Forwarded-Proto http", url: "http://app.internal.test/login", set: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}}, want: 1},
		{name: "Forwarded proto=https", url: "http://app.internal.test/login", set: true,
			header: http.Header{"Forwarded": {`for=192.0.2.60;proto="https";by=203.0.113.43`}}, want: 0},
		{name: "Insecure", url: "http://app.internal.test/login", set: true, insecure: true, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &captureHandler{}
			m, err := pgsession.New(pgsession.Config{
				Backend:  pgsession.NewMemoryBackend(),
				HashKeys: [][]byte{exampleKey},
				Cookie:   pgsession.CookieConfig{Insecure: tt.insecure},
				Logger:   slog.New(logs),
			})
			if err != nil {
				t.Fatal(err)
			}
			h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.set {
					if err := pgsession.FromContext(r.Context()).Set("user", 1); err != nil {
						t.Error(err)
					}
				}
			}))
			for range 3 {
				r := httptest.NewRequest(http.MethodPost, tt.url, nil)
				for k, v := range tt.header {
					r.Header[k] = v
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if got := rec.Result().Cookies(); tt.set != (len(got) > 0) {
					t.Fatalf("cookies = %v, want set=%v", got, tt.set)
				}
			}
			if got := logs.count(slog.LevelWarn, warning); got != tt.want {
				t.Errorf("%d warnings about plain HTTP, want %d; records: %v", got, tt.want, logs.records)
			}
		})
	}
}
