package pgsession

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
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
