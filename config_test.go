package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

func TestNewValidatesConfig(t *testing.T) {
	key := make([]byte, 32)
	ok := func() pgsession.Config {
		return pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{key}}
	}
	tests := []struct {
		name string
		mod  func(*pgsession.Config)
		want string // substring of the error
	}{
		{"no backend", func(c *pgsession.Config) { c.Backend = nil }, "Backend is nil"},
		{"no hash key", func(c *pgsession.Config) { c.HashKeys = nil }, "no HashKeys"},
		{"short hash key", func(c *pgsession.Config) { c.HashKeys = [][]byte{key, []byte("short")} }, "HashKeys[1] is 5 bytes"},
		{"resolution not below idle", func(c *pgsession.Config) { c.IdleTimeout, c.TimeoutResolution = time.Minute, time.Minute }, "TimeoutResolution"},
		{"default resolution above idle", func(c *pgsession.Config) { c.IdleTimeout = 5 * time.Minute }, "TimeoutResolution (10m0s)"},
		{"negative size", func(c *pgsession.Config) { c.MaxDataSize = -1 }, "MaxDataSize"},
		{"bad cookie name", func(c *pgsession.Config) { c.Cookie.Name = "bad name;" }, "Cookie"},
		{"bad cookie path", func(c *pgsession.Config) { c.Cookie.Path = "/a;b" }, "Cookie"},
		{"SameSite None needs Secure", func(c *pgsession.Config) {
			c.Cookie.SameSite, c.Cookie.Insecure = http.SameSiteNoneMode, true
		}, "SameSite=None"},
		{"__Host- prefix rules", func(c *pgsession.Config) { c.Cookie.Name, c.Cookie.Path = "__Host-sid", "/app" }, "__Host-"},
		{"__Secure- prefix rules", func(c *pgsession.Config) { c.Cookie.Name, c.Cookie.Insecure = "__Secure-sid", true }, "__Secure-"},
		// Browsers match prefixes in any case and drop cookies that break them.
		{"__HOST- in another case", func(c *pgsession.Config) { c.Cookie.Name, c.Cookie.Insecure = "__HOST-x", true }, "__Host-"},
		{"__secure- in another case", func(c *pgsession.Config) { c.Cookie.Name, c.Cookie.Insecure = "__secure-x", true }, "__Secure-"},
		{"indicator __Host- with a Domain", func(c *pgsession.Config) { c.Cookie.IndicatorName, c.Cookie.Domain = "__Host-ind", "example.com" }, "IndicatorName"},
		{"indicator __Secure- when Insecure", func(c *pgsession.Config) { c.Cookie.IndicatorName, c.Cookie.Insecure = "__Secure-ind", true }, "IndicatorName"},
		{"indicator named like the cookie", func(c *pgsession.Config) { c.Cookie.IndicatorName = "__host-SESSION-KEY" }, "IndicatorName must differ"},
		{"unknown carrier", func(c *pgsession.Config) { c.Carrier = 7 }, "Carrier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok()
			tt.mod(&cfg)
			m, err := pgsession.New(cfg)
			if !errors.Is(err, pgsession.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) || m != nil {
				t.Errorf("New = %v, %v; want ErrInvalidConfig mentioning %q", m, err, tt.want)
			}
		})
	}
	valid := []func(*pgsession.Config){
		func(*pgsession.Config) {},
		func(c *pgsession.Config) { c.IdleTimeout, c.TimeoutResolution = -1, time.Hour }, // idle off: any resolution
		func(c *pgsession.Config) { c.IdleTimeout, c.AbsoluteTimeout, c.TimeoutResolution = -1, -1, -1 },
		func(c *pgsession.Config) { c.Cookie.Name = "__Host-sid" },
	}
	for i, mod := range valid {
		cfg := ok()
		mod(&cfg)
		if _, err := pgsession.New(cfg); err != nil {
			t.Errorf("valid config %d: %v", i, err)
		}
	}
}

func TestMisuseOutsideMiddleware(t *testing.T) {
	ctx := context.Background()
	if s := pgsession.FromContext(ctx); s != nil {
		t.Errorf("FromContext outside the middleware = %v, want nil", s)
	}
	s := pgsession.FromContext(ctx)
	if _, err := s.Get("a", new(int)); !errors.Is(err, pgsession.ErrNoSession) {
		t.Errorf("nil Session Get = %v", err)
	}
	for _, err := range []error{s.Set("a", 1), s.Delete("a"), s.Clear()} {
		if !errors.Is(err, pgsession.ErrNoSession) {
			t.Errorf("nil Session change = %v, want ErrNoSession", err)
		}
	}
	if s.Len() != 0 {
		t.Error("nil Session Len != 0")
	}
	if _, err := pgsession.Token(ctx); !errors.Is(err, pgsession.ErrNoSession) {
		t.Errorf("Token = %v, want ErrNoSession", err)
	}
	if err := pgsession.RotateKey(ctx); !errors.Is(err, pgsession.ErrNoSession) {
		t.Errorf("RotateKey = %v, want ErrNoSession", err)
	}
	if err := pgsession.FreezeSession(ctx); !errors.Is(err, pgsession.ErrNoSession) {
		t.Errorf("FreezeSession = %v, want ErrNoSession", err)
	}
}
