package pgsession

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/pgsession/pgsession/backend"
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
	c := credential{key: newKey(), sid: newSessionID()}
	v := securecookieValue("session-key", hashKey, c.payload(), time.Now().Add(-400*24*time.Hour))
	if got, ok := s.decode(v); !ok || !got.equal(c) {
		t.Fatalf("a 400-day-old cookie did not verify")
	}
	// The hand-built format is securecookie's: a fresh one round-trips,
	// verified by a signer that did not sign it (and so has not
	// remembered it).
	enc := s.encode(c.sid, c.key, backend.ID{})
	if got, ok := newSigner("session-key", [][]byte{hashKey}).decode(enc); !ok || !got.equal(c) {
		t.Fatal("round trip failed")
	}
	// A token of the old form, the key alone, verifies with a zero SessionID.
	old := securecookieValue("session-key", hashKey, c.key, time.Now())
	if got, cur, ok := s.decodeCurrent(old); !ok || cur || !got.equal(credential{key: c.key}) {
		t.Fatalf("a token of the old form: %+v, current %v, %v", got, cur, ok)
	}
	// Tampering, another name or another key fail, and so do a payload of
	// another length and a zero SessionID (never issued).
	for _, bad := range []string{
		securecookieValue("other", hashKey, c.payload(), time.Now()),
		securecookieValue("session-key", []byte(strings.Repeat("x", 32)), c.payload(), time.Now()),
		securecookieValue("session-key", hashKey, c.key[:31], time.Now()),
		securecookieValue("session-key", hashKey, c.payload()[:47], time.Now()),
		securecookieValue("session-key", hashKey, append(c.payload(), 0), time.Now()),
		securecookieValue("session-key", hashKey, append(make([]byte, 16), c.key...), time.Now()),
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

// A write that keeps the key sends the request's own cookie value back when
// the current hash key signed it (no signing per write), and signs the key
// anew when an older hash key did, so secret rotation moves sessions over;
// a rotation gets a new value.
func TestSetCookieResendsCurrentValue(t *testing.T) {
	oldKey, curKey := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("c", 32))
	m, err := New(Config{Backend: NewMemoryBackend(), HashKeys: [][]byte{curKey, oldKey}, Cookie: CookieConfig{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := FromContext(r.Context())
		var n int
		_, err := s.Get("n", &n)
		if err == nil {
			err = s.Set("n", n+1)
		}
		if err == nil && r.URL.Query().Has("rotate") {
			err = RotateKey(r.Context())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	defer srv.Close()
	// do sends value (if any) and returns the session cookie's new value.
	do := func(query, value string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/?"+query, nil)
		if value != "" {
			req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: value})
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == m.CookieName() {
				return c.Value
			}
		}
		return "" // none sent
	}
	current := newSigner(m.CookieName(), [][]byte{curKey})
	first := do("", "")
	if first == "" {
		t.Fatal("a new session sent no cookie")
	}
	key, ok := current.decode(first)
	if !ok || key.sid == (SessionID{}) {
		t.Fatal("a new session's cookie is not signed with the first hash key, in the new form")
	}
	// Signed an hour ago (a fresh signature would carry another time).
	hourOld := securecookieValue(m.CookieName(), curKey, key.payload(), time.Now().Add(-time.Hour))
	if again := do("", hourOld); again != "" {
		t.Errorf("a write sent a current cookie again: %q, want none (nothing to re-sign)", again)
	}
	// The same key, signed (as before a secret rotation) with the old key.
	old := securecookieValue(m.CookieName(), oldKey, key.payload(), time.Now().Add(-time.Hour))
	resigned := do("", old)
	if got, ok := current.decode(resigned); !ok || !got.equal(key) {
		t.Errorf("a cookie signed with the old hash key came back as %q, want the same key signed with the first", resigned)
	}
	// The same key in the old form (the key alone): re-signed in the new.
	oldForm := securecookieValue(m.CookieName(), curKey, key.key, time.Now().Add(-time.Hour))
	upgraded := do("", oldForm)
	if got, ok := current.decode(upgraded); !ok || !got.equal(key) {
		t.Errorf("a cookie of the old form came back as %q, want the session ID and key signed with the first hash key", upgraded)
	}
	rotated := do("rotate", resigned)
	if got, ok := current.decode(rotated); !ok || string(got.key) == string(key.key) || got.sid != key.sid {
		t.Errorf("a rotation answered %q: want a new key, the same session ID, signed with the first hash key", rotated)
	}
}

// payload is what a token of c signs: its SessionID and key, or the key
// alone for a zero SessionID (the old form).
func (c credential) payload() []byte {
	if c.sid == (SessionID{}) {
		return c.key
	}
	return append(c.sid[:], c.key...)
}

func (c credential) equal(d credential) bool { return c.sid == d.sid && string(c.key) == string(d.key) }

// remembered returns how many values v holds.
func remembered(v *verifiedValues) int {
	n := 0
	for i := range v.shards {
		if sl := v.shards[i].slots; sl != nil {
			for _, s := range sl {
				if s.n > 0 {
					n++
				}
			}
		}
	}
	return n
}

// A value that verified is remembered: the next decode of the very same
// string gives the same credential, with its hash, without verifying again;
// so is a value the signer signed itself; a forged value is never
// remembered; the memory holds at most verifiedSlots values, a new one
// taking an older one's slot, which then verifies again.
func TestSignerRemembersVerifiedValues(t *testing.T) {
	hashKey := []byte(strings.Repeat("k", 32))
	s := newSigner("session-key", [][]byte{hashKey})
	c := credential{key: newKey(), sid: newSessionID()}
	v := securecookieValue("session-key", hashKey, c.payload(), time.Now())
	first, cur, ok := s.decodeCurrent(v)
	if !ok || !cur || !first.equal(c) || first.id != idOf(c.key) || remembered(s.seen) != 1 {
		t.Fatalf("first decode: %+v, current %v, %v; %d remembered", first, cur, ok, remembered(s.seen))
	}
	signed := credential{key: newKey(), sid: newSessionID()}
	enc := s.encode(signed.sid, signed.key, backend.ID{})
	if remembered(s.seen) != 2 {
		t.Fatalf("after encode: %d remembered, want 2", remembered(s.seen))
	}
	// Break every verifier: only the memory can answer now.
	macs := s.macs
	s.macs = []*sync.Pool{{New: func() any { return &verifier{mac: hmac.New(sha256.New, []byte("not the key"))} }}}
	again, cur, ok := s.decodeCurrent(v)
	if !ok || !cur || !again.equal(c) || again.id != idOf(c.key) {
		t.Fatalf("a remembered value: %+v, current %v, %v; want %+v", again, cur, ok, c)
	}
	again.key[0] ^= 0xff // the caller's own copy
	if got, cur, ok := s.decodeCurrent(enc); !ok || !cur || !got.equal(signed) || got.id != idOf(signed.key) {
		t.Fatalf("a value the signer signed: %+v, current %v, %v; want %+v", got, cur, ok, signed)
	}
	if got, _, ok := s.decodeCurrent(v); !ok || !got.equal(c) {
		t.Fatal("the remembered key changed with the caller's copy")
	}
	s.macs = macs
	if _, ok := s.decode(v[:len(v)-2] + "AA"); ok {
		t.Fatal("a tampered value verified")
	}
	if n := remembered(s.seen); n != 2 {
		t.Fatalf("%d values remembered after a forged one, want 2", n)
	}
	// Three times as many values as slots: at most verifiedSlots stay,
	// and the first, evicted, still verifies (and is remembered again).
	for range 3 * verifiedSlots {
		s.encode(newSessionID(), newKey(), backend.ID{})
	}
	if n := remembered(s.seen); n > verifiedSlots || n < verifiedSlots/2 {
		t.Errorf("%d values remembered after %d, want at most %d and most slots used", n, 3*verifiedSlots, verifiedSlots)
	}
	if got, _, ok := s.decodeCurrent(v); !ok || !got.equal(c) {
		t.Error("a value no longer remembered did not verify")
	}
}

// The memory of verified values holds no pointers, so the garbage
// collector never scans it, however many values it holds.
func TestVerifiedSlotHoldsNoPointers(t *testing.T) {
	var walk func(reflect.Type) bool
	walk = func(t reflect.Type) bool {
		switch t.Kind() {
		case reflect.Bool, reflect.Uint8, reflect.Int64, reflect.Uint64:
			return true
		case reflect.Array:
			return walk(t.Elem())
		case reflect.Struct:
			for i := range t.NumField() {
				if !walk(t.Field(i).Type) {
					return false
				}
			}
			return true
		}
		return false
	}
	if typ := reflect.TypeFor[[slotsPerShard]verifiedSlot](); !walk(typ) {
		t.Errorf("%v holds a pointer (or a kind this check does not know)", typ)
	}
}

// The middleware's own scan of Cookie headers (nextCookie) finds what
// net/http's Request.CookiesNamed finds, in the same order: on random
// header lines built from the bytes that matter to the split (separators,
// quotes, white space, the name's own letters), every value CookiesNamed
// returns is the one nextCookie returns at that place; nextCookie may also
// return values whose bytes net/http rejects (they cannot verify). Past
// net/http's cookie limit, both find none.
func TestNextCookieMatchesNetHTTP(t *testing.T) {
	const name = "sid"
	alphabet := []string{"sid", "s", "id", "=", ";", "; ", " ", "\t", `"`, "v", "AZ-_", ",", "\\", "\x7f", "é", "sid=x"}
	rng := rand.New(rand.NewPCG(1, 2))
	validByte := func(b byte) bool { return 0x20 <= b && b < 0x7f && b != '"' && b != ';' && b != '\\' }
	valid := func(v string) bool {
		for i := range len(v) {
			if !validByte(v[i]) {
				return false
			}
		}
		return true
	}
	fixed := [][]string{{`sid="abc"`}, {` sid = "a b" ;sid=`, `x=1;sid="";sid="q`}, {`SID=a; sid=b; sid =c;sid= d `}, {`sid`, `sid=a=b`}}
	for i := range 20000 {
		var lines []string
		for range 1 + rng.IntN(2) {
			var b strings.Builder
			for range rng.IntN(12) {
				b.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			lines = append(lines, b.String())
		}
		if i < len(fixed) {
			lines = fixed[i]
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Cookie"] = lines
		var want, got []string
		for _, c := range r.CookiesNamed(name) {
			want = append(want, c.Value)
		}
		for _, line := range lines {
			for v, rest, ok := nextCookie(line, name); ok; v, rest, ok = nextCookie(rest, name) {
				if valid(v) {
					got = append(got, v)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("case %d, lines %q: nextCookie found %q, net/http %q", i, lines, got, want)
		}
	}
	many := []string{strings.Repeat("a=1; ", maxCookies) + "sid=x"}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header["Cookie"] = many
	if cookiesWithinLimit(many) || len(r.CookiesNamed(name)) != 0 {
		t.Fatalf("%d cookies: within limit %v, net/http found %d", maxCookies+1, cookiesWithinLimit(many), len(r.CookiesNamed(name)))
	}
	if few := []string{strings.Repeat("a=1; ", maxCookies-1) + "sid=x"}; !cookiesWithinLimit(few) {
		t.Fatalf("%d cookies: not within limit", maxCookies)
	}
}

// appendHTTPDate writes what AppendFormat(http.TimeFormat) writes, in UTC,
// at every kind of date: each month and weekday, single digits, leap days,
// years at the edges of its own path and beyond, other time zones.
func TestAppendHTTPDate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	zone := time.FixedZone("X", -(9*3600 + 30*60))
	times := []time.Time{time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.UTC), time.Date(999, 12, 31, 23, 0, 0, 0, time.UTC),
		time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 31, 20, 0, 0, 0, zone), time.Unix(0, 0)}
	for range 20000 {
		times = append(times, time.Unix(rng.Int64N(400*365*86400)-100*365*86400, rng.Int64N(1e9)).In(zone))
	}
	for _, tm := range times {
		if got, want := string(appendHTTPDate([]byte("x"), tm)), "x"+tm.UTC().Format(http.TimeFormat); got != want {
			t.Fatalf("appendHTTPDate(%v) = %q, want %q", tm, got, want)
		}
	}
}

// The signer writes securecookie's format: gorilla's own Decode, with the
// settings of the format (hash key only, MaxAge 0, NopEncoder), reads every
// token back to its payload, for each hash key position and cookie name,
// and the value's date is now.
func TestSignerFormat(t *testing.T) {
	for _, name := range []string{"session-key", "__Host-x", "a"} {
		hashKey := []byte(strings.Repeat(name, 40)[:40])
		s := newSigner(name, [][]byte{hashKey, []byte(strings.Repeat("o", 32))})
		reference := securecookie.New(hashKey, nil).MaxAge(0).SetSerializer(securecookie.NopEncoder{})
		for range 100 {
			c := credential{key: newKey(), sid: newSessionID()}
			before := time.Now().Unix()
			enc := s.encode(c.sid, c.key, backend.ID{})
			var payload []byte
			if err := reference.Decode(name, enc, &payload); err != nil || !bytes.Equal(payload, c.payload()) {
				t.Fatalf("securecookie decodes %q as %x, %v; want %x", enc, payload, err, c.payload())
			}
			raw, _ := base64.URLEncoding.DecodeString(enc)
			date, _, _ := strings.Cut(string(raw), "|")
			if d, err := strconv.ParseInt(date, 10, 64); err != nil || d < before || d > time.Now().Unix() {
				t.Fatalf("date %q, want the time of signing", date)
			}
		}
	}
}
