package pgsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/securecookie"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// The fixed secrets of the black-box fuzz targets; the seed corpus in
// testdata/fuzz holds values signed with them.
var (
	fuzzHashKey    = []byte(strings.Repeat("k", 32))
	fuzzSessionKey = []byte("0123456789abcdef0123456789abcdef")
	fuzzSessionID  = pgsession.SessionID([]byte("session-id-16byt"))
	fuzzNow        = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// fuzzCodec is the cookie format, built independently of the package so it
// can judge the package's verification: securecookie, raw bytes, no
// timestamp limit, no length limit.
func fuzzCodec() *securecookie.SecureCookie {
	return securecookie.New(fuzzHashKey, nil).MaxAge(0).MaxLength(0).SetSerializer(securecookie.NopEncoder{})
}

// fuzzVerifies reports whether value is a validly signed token: a SessionID
// (not zero) and a key, 48 bytes, or a key alone (the old form).
func fuzzVerifies(value string) bool {
	var payload []byte
	if fuzzCodec().Decode(pgsession.DefaultCookieName, value, &payload) != nil {
		return false
	}
	return len(payload) == 32 || len(payload) == 48 && !bytes.Equal(payload[:16], make([]byte, 16))
}

// countingMemory counts the calls that reach a memory backend.
type countingMemory struct {
	*pgsession.MemoryBackend
	loads, applies atomic.Int64
}

func (b *countingMemory) Load(ctx context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	b.loads.Add(1)
	return b.MemoryBackend.Load(ctx, id, sid)
}

func (b *countingMemory) Apply(ctx context.Context, a backend.Action) error {
	b.applies.Add(1)
	return b.MemoryBackend.Apply(ctx, a)
}

// FuzzCookieHeader sends arbitrary raw Cookie and Authorization header
// values (several cookies, other names, odd separators and quoting,
// non-UTF-8 bytes, oversized values) to a handler that only reads its
// session. Never a panic or a status other than 200; the backend is never
// asked to load unless some session cookie or bearer token verifies; nothing
// is written and no cookie is set; a verified key reads its own session.
// Seeds: testdata/fuzz/FuzzCookieHeader.
func FuzzCookieHeader(f *testing.F) {
	valid, err := fuzzCodec().Encode(pgsession.DefaultCookieName, fuzzSessionKey)
	if err != nil {
		f.Fatal(err)
	}
	newForm, err := fuzzCodec().Encode(pgsession.DefaultCookieName, append(fuzzSessionID[:], fuzzSessionKey...))
	if err != nil {
		f.Fatal(err)
	}
	name := pgsession.DefaultCookieName
	f.Add(name+"="+newForm, "")
	f.Add("", "Bearer "+newForm)
	f.Add(name+"="+valid, "")
	f.Add("other=1; "+name+"=garbage; "+name+"="+valid, "")
	f.Add(name+`="`+valid+`"`, "")
	f.Add(name+"="+valid[:len(valid)-2], "Bearer "+valid)
	f.Add("", "bearer  "+valid+" ")
	f.Add(name+"="+strings.Repeat("A", 520), "Basic "+valid)
	f.Add(strings.Repeat(name+"=x;", 20), "Bearer")

	b := &countingMemory{MemoryBackend: pgsession.NewMemoryBackend()}
	err = b.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: sha256.Sum256(fuzzSessionKey), SessionID: fuzzSessionID,
		Patch:   backend.Patch{Replace: true, Set: map[string]json.RawMessage{"user": json.RawMessage(`"ada"`)}},
		Created: fuzzNow, Accessed: fuzzNow})
	if err != nil {
		f.Fatal(err)
	}
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{fuzzHashKey}, Carrier: pgsession.CookieOrBearer,
		Cookie: pgsession.CookieConfig{Name: pgsession.DefaultCookieName}, // the seeds are signed for this name
		Now:    func() time.Time { return fuzzNow }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var user string
		if _, err := pgsession.FromContext(r.Context()).Get("user", &user); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		_, _ = w.Write([]byte(user))
	}))

	f.Fuzz(func(t *testing.T, cookie, authorization string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header["Cookie"] = []string{cookie}
		req.Header["Authorization"] = []string{authorization}
		verifies := false
		for _, c := range req.CookiesNamed(name) {
			verifies = verifies || fuzzVerifies(c.Value)
		}
		if scheme, token, ok := strings.Cut(authorization, " "); ok && strings.EqualFold(scheme, "bearer") {
			verifies = verifies || fuzzVerifies(strings.TrimSpace(token))
		}
		loads, applies := b.loads.Load(), b.applies.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d, body %q", rec.Code, rec.Body)
		}
		if n := b.loads.Load() - loads; !verifies && n != 0 {
			t.Fatalf("nothing verifies, yet %d loads", n)
		}
		if n := b.applies.Load() - applies; n != 0 {
			t.Fatalf("a read-only request wrote %d times", n)
		}
		if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
			t.Fatalf("a read-only request set cookies: %q", sc)
		}
		// The only key the fuzzer can present validly is the stored one, so
		// a request that loaded anything must have read that session.
		if b.loads.Load() != loads && rec.Body.String() != "ada" {
			t.Fatalf("a verified key read %q, want the stored session's user", rec.Body)
		}
	})
}

// FuzzSetRoundTrip stores an arbitrary JSON value under an arbitrary key
// through the middleware, then reads it back in a second request. Set
// refuses exactly what PostgreSQL cannot store (NUL characters, in keys or
// anywhere in the value) and keys that are not UTF-8; whatever it accepts
// reads back equal. Seeds: testdata/fuzz/FuzzSetRoundTrip.
func FuzzSetRoundTrip(f *testing.F) {
	f.Add("user", []byte(`{"id":7,"roles":["a","b"],"n":null}`))
	f.Add("k", []byte(`"a\u0000b"`))
	f.Add("k", []byte(`"\\u0000"`))
	f.Add("k\x00", []byte(`1`))
	f.Add("\xff", []byte(`1`))
	f.Add("k", []byte(`{"a\u0000":1}`))
	f.Add("", []byte(`[1e308,-0,0.1,123456789012345678]`))
	f.Add("k", []byte(`"\ud800\udc00 \ud800"`))

	m, err := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{fuzzHashKey},
		MaxDataSize: 16 << 20, Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	var (
		key     string
		value   any
		setErr  error
		got     any
		found   bool
		getErr  error
		handler = m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := pgsession.FromContext(r.Context())
			if r.URL.Path == "/set" {
				setErr = s.Set(key, value)
				return
			}
			got = nil
			found, getErr = s.Get(key, &got)
		}))
	)
	f.Fuzz(func(t *testing.T, k string, raw []byte) {
		if err := json.Unmarshal(raw, &value); err != nil {
			return // not a JSON value (or a number beyond float64)
		}
		key = k
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/set", nil))
		unstorable := !utf8.ValidString(k) || strings.ContainsRune(k, 0) || hasNULString(value)
		switch {
		case unstorable && !errors.Is(setErr, pgsession.ErrInvalidValue):
			t.Fatalf("Set(%q, %s) = %v, want ErrInvalidValue", k, raw, setErr)
		case !unstorable && setErr != nil:
			t.Fatalf("Set(%q, %s) = %v", k, raw, setErr)
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if setErr != nil {
			if len(rec.Result().Cookies()) != 0 {
				t.Fatal("a refused Set still created a session")
			}
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/get", nil)
		for _, c := range rec.Result().Cookies() {
			req.AddCookie(c)
		}
		rec = httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !found || getErr != nil {
			t.Fatalf("Get(%q) after Set: status %d, found %v, %v", k, rec.Code, found, getErr)
		}
		if !reflect.DeepEqual(got, value) {
			t.Fatalf("Get(%q) = %#v, want %#v", k, got, value)
		}
	})
}

// hasNULString reports whether a decoded JSON value holds a NUL character in
// any string or object key.
func hasNULString(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		for _, e := range v {
			if hasNULString(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || hasNULString(e) {
				return true
			}
		}
	}
	return false
}
