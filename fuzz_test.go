package pgsession

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/pgsession/pgsession/backend"
)

// loadCounter counts Load calls on a memory backend.
type loadCounter struct {
	*MemoryBackend
	loads atomic.Int64
}

func (b *loadCounter) Load(ctx context.Context, id backend.ID, sid SessionID) (*backend.Record, error) {
	b.loads.Add(1)
	return b.MemoryBackend.Load(ctx, id, sid)
}

// FuzzCookie feeds arbitrary cookie and Authorization header values through
// the middleware: never a panic, never a 500, and a value that does not
// verify never reaches the backend. The signer's own verification accepts
// exactly what securecookie's Decode accepts. Seeds: testdata/fuzz/FuzzCookie.
func FuzzCookie(f *testing.F) {
	hashKey := []byte(strings.Repeat("k", 32))
	b := &loadCounter{MemoryBackend: NewMemoryBackend()}
	m, err := New(Config{Backend: b, HashKeys: [][]byte{hashKey}, Carrier: CookieOrBearer})
	if err != nil {
		f.Fatal(err)
	}
	s := m.signer
	reference := securecookie.New(hashKey, nil).MaxAge(0).MaxLength(maxCookieValue).SetSerializer(securecookie.NopEncoder{})
	valid := s.encode(newSessionID(), make([]byte, keyLength), backend.ID{})
	f.Add(valid)
	oldForm, _ := reference.Encode(m.CookieName(), make([]byte, keyLength))
	f.Add(oldForm)
	f.Add("")
	f.Add(valid[:len(valid)-1])
	f.Add(strings.Repeat("A", 600))
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v any
		_, _ = FromContext(r.Context()).Get("x", &v)
		_ = FromContext(r.Context()).Set("seen", true)
	}))
	f.Fuzz(func(t *testing.T, value string) {
		key, verifies := s.decode(value)
		var want []byte
		err := reference.Decode(m.CookieName(), value, &want)
		accept := err == nil && (len(want) == keyLength || len(want) == tokenLength && !bytes.Equal(want[:16], make([]byte, 16)))
		if accept != verifies || verifies && !bytes.Equal(key.payload(), want) {
			t.Fatalf("cookie %q: decode = %x, %v; securecookie: %x, %v", value, key.payload(), verifies, want, err)
		}
		before := b.loads.Load()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Cookie", m.CookieName()+"="+value+"; "+m.CookieName()+"="+value)
		req.Header.Set("Authorization", "Bearer "+value)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("cookie %q: status %d", value, rec.Code)
		}
		if loads := b.loads.Load() - before; !verifies && loads != 0 {
			t.Fatalf("cookie %q does not verify but caused %d loads", value, loads)
		}
	})
}

// FuzzSessionData treats arbitrary bytes as a stored session's data: a
// request reads every key into several types, changes some and is saved
// through the policy. Nothing may panic, and what is saved must be storable.
// Seeds: testdata/fuzz/FuzzSessionData.
func FuzzSessionData(f *testing.F) {
	f.Add([]byte(`{"user":"ada","n":42,"cart":[1,2,{"x":null}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"":"","\u00e9":1e400,"big":123456789012345678901234567890}`))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m, err := New(Config{Backend: NewMemoryBackend(), HashKeys: [][]byte{make([]byte, 32)}, PrincipalKey: "user",
		MaxDataSize: 1 << 20, Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stored []byte) {
		var data map[string]json.RawMessage
		if json.Unmarshal(stored, &data) != nil {
			return // a backend reports such data as an error on load
		}
		rec := &backend.Record{ID: backend.ID{1}, Data: data, Created: t0.Add(-time.Hour), Accessed: t0.Add(-time.Hour)}
		s := &Session{m: m, now: t0, loaded: rec, key: make([]byte, keyLength), data: rec.Data}
		for k := range data {
			var (
				str  string
				num  float64
				obj  map[string]any
				arr  []any
				anyV any
			)
			for _, dst := range []any{&str, &num, &obj, &arr, &anyV} {
				_, _ = s.Get(k, dst)
			}
			if err := s.Set(k, anyV); err != nil && len(k)%2 == 0 {
				_ = s.Delete(k)
			}
		}
		_ = s.Set("fuzz", string(stored))
		c, ok := s.seal()
		if !ok {
			t.Fatal("seal failed")
		}
		d := m.p.decide(rec, c, t0)
		if err := m.cfg.Backend.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: backend.ID{2}, Patch: backend.Patch{Replace: true, Set: c.data},
			Created: t0, Accessed: t0}); err != nil {
			t.Fatalf("saved data not storable: %v", err)
		}
		_ = m.cfg.Backend.Apply(context.Background(), backend.Action{Op: backend.OpDelete, Old: backend.ID{2}})
		if _, err := json.Marshal(d.action.Patch.Set); err != nil {
			t.Fatalf("patch does not encode: %v", err)
		}
	})
}
