package pgsession

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// securecookieValue builds a securecookie value by hand with an arbitrary
// timestamp: base64url(date|base64url(payload)|HMAC-SHA256(name|date|base64url(payload))).
func securecookieValue(name string, hashKey, payload []byte, at time.Time) string {
	b := fmt.Sprintf("%d|%s", at.Unix(), base64.URLEncoding.EncodeToString(payload))
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(name + "|" + b))
	return base64.URLEncoding.EncodeToString(append([]byte(b+"|"), mac.Sum(nil)...))
}

// The server alone decides expiry: securecookie's own 30-day timestamp check
// is off, so an AbsoluteTimeout beyond 30 days works.
func TestSignerIgnoresCookieAge(t *testing.T) {
	hashKey := []byte(strings.Repeat("k", 32))
	s := newSigner("session-key", [][]byte{hashKey})
	key := newKey()
	v := securecookieValue("session-key", hashKey, key, time.Now().Add(-400*24*time.Hour))
	if got, ok := s.decode(v); !ok || string(got) != string(key) {
		t.Fatalf("a 400-day-old cookie did not verify")
	}
	// The hand-built format is securecookie's: a fresh one round-trips.
	enc, err := s.encode(key)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := s.decode(enc); !ok || string(got) != string(key) {
		t.Fatal("round trip failed")
	}
	// Tampering, another name or another key fail.
	for _, bad := range []string{
		securecookieValue("other", hashKey, key, time.Now()),
		securecookieValue("session-key", []byte(strings.Repeat("x", 32)), key, time.Now()),
		securecookieValue("session-key", hashKey, key[:31], time.Now()),
		enc[:len(enc)-4] + "AAAA",
		strings.Repeat("A", maxCookieValue+1),
	} {
		if _, ok := s.decode(bad); ok {
			t.Errorf("%.30q verified", bad)
		}
	}
}

func TestNewKeyIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := newKey()
		if len(k) != keyLength || seen[string(k)] {
			t.Fatalf("key %x repeated or of length %d", k, len(k))
		}
		seen[string(k)] = true
	}
}

// sessionHeader writes exactly what http.Cookie.String writes for the
// session cookie, in every configuration New accepts.
func TestSessionHeaderIsCookieString(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	value := "MTc2NDUwNDAwMHxRV0pEUkVWR1IwaEpTa3RNVFU1UFVGRlNVMVJWVmxkWVdWcGhZbU5rWldablowaHB8" + "-_=="
	for _, cfg := range []CookieConfig{
		{},
		{Insecure: true},
		{SameSite: http.SameSiteStrictMode},
		{SameSite: http.SameSiteNoneMode},
		{Path: "/app"},
		{Name: "sid", Path: "/a b"},
		{Domain: "example.com"},
		{Domain: ".example.com", Insecure: true},
		{SessionOnly: true},
	} {
		resolved, err := cfg.resolve()
		if err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		for _, expires := range []time.Time{{}, now.Add(8 * time.Hour), now.Add(time.Millisecond), now.In(time.FixedZone("x", 3600)).Add(time.Hour)} {
			got := resolved.sessionHeader(value, expires, now)
			want := resolved.cookie(resolved.Name, value, expires, now).String()
			if got != want {
				t.Errorf("%+v, expires %v:\n got %s\nwant %s", cfg, expires, got, want)
			}
		}
	}
}
