package pgsessiontest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// Env is a pgsession.Manager set up for handler tests: a manual clock, a
// known hash key, and (unless the Config names another) an in-memory
// backend. It can create requests that already carry a session and read back
// what a response saved.
type Env struct {
	// Manager is the Manager under test; wrap handlers with its Middleware.
	Manager *pgsession.Manager
	// Backend stores the Manager's sessions: the Config's, or a
	// MemoryBackend. Login writes to it and Saved reads from it.
	Backend backend.Backend
	// Clock is the Manager's clock; Advance it to make sessions idle or
	// expire.
	Clock *Clock

	hashKey    []byte
	cookieName string
}

// Epoch is where an Env's clock starts.
var Epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// NewEnv returns an Env for cfg. Zero fields get test values: a
// MemoryBackend, a random hash key, a Clock at Epoch, and a logger that
// discards. The cookie is Secure as in production unless cfg says otherwise;
// httptest.NewRecorder and direct ServeHTTP calls do not care. It fails the
// test if cfg is invalid.
func NewEnv(t testing.TB, cfg pgsession.Config) *Env {
	t.Helper()
	e := &Env{Backend: cfg.Backend, Clock: NewClock(Epoch)}
	if e.Backend == nil {
		e.Backend = pgsession.NewMemoryBackend()
		cfg.Backend = e.Backend
	}
	if len(cfg.HashKeys) == 0 {
		cfg.HashKeys = [][]byte{randomBytes(32)}
	}
	if cfg.Now == nil {
		cfg.Now = e.Clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e.hashKey = cfg.HashKeys[0]
	m, err := pgsession.New(cfg)
	if err != nil {
		t.Fatalf("pgsessiontest: %v", err)
	}
	e.Manager = m
	e.cookieName = m.CookieName()
	return e
}

// Login stores a new session holding values (each encoded as JSON) and
// returns the cookie a browser would send for it.
func (e *Env) Login(t testing.TB, values map[string]any) *http.Cookie {
	t.Helper()
	set := make(map[string]json.RawMessage, len(values))
	for k, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("pgsessiontest: value %q: %v", k, err)
		}
		set[k] = b
	}
	key, sid := randomBytes(32), pgsession.SessionID(randomBytes(16))
	now := e.Clock.Now().Truncate(time.Microsecond)
	err := e.Backend.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: sha256.Sum256(key), SessionID: sid,
		Patch: backend.Patch{Replace: true, Set: set}, Created: now, Accessed: now})
	if err != nil {
		t.Fatalf("pgsessiontest: store session: %v", err)
	}
	return &http.Cookie{Name: e.cookieName, Value: e.sign(t, append(sid[:], key...))}
}

// Request returns r with a new stored session holding values attached as
// its cookie.
func (e *Env) Request(t testing.TB, r *http.Request, values map[string]any) *http.Request {
	t.Helper()
	r.AddCookie(e.Login(t, values))
	return r
}

// Saved returns the session data stored for the client after the exchange
// req → resp: the session named by the response's Set-Cookie if it sent one,
// else by the request's cookie. It returns nil when the client has no session
// (none was created, or it was deleted or expired).
func (e *Env) Saved(t testing.TB, req *http.Request, resp *http.Response) map[string]json.RawMessage {
	t.Helper()
	value := ""
	if ck, err := req.Cookie(e.cookieName); err == nil {
		value = ck.Value
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == e.cookieName {
			value = ck.Value
			if ck.MaxAge < 0 {
				value = ""
			}
		}
	}
	if value == "" {
		return nil
	}
	key, sid, ok := e.credOf(value)
	if !ok {
		return nil
	}
	rec, err := e.Backend.Load(context.Background(), sha256.Sum256(key), sid)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("pgsessiontest: load session: %v", err)
	}
	return rec.Data
}

// SavedValue decodes the value stored under key after req → resp into dst
// (see Saved) and reports whether it was there.
func (e *Env) SavedValue(t testing.TB, req *http.Request, resp *http.Response, key string, dst any) bool {
	t.Helper()
	v, ok := e.Saved(t, req, resp)[key]
	if !ok {
		return false
	}
	if err := json.Unmarshal(v, dst); err != nil {
		t.Fatalf("pgsessiontest: value %q: %v", key, err)
	}
	return true
}

// CookieName returns the session cookie's name.
func (e *Env) CookieName() string { return e.cookieName }

// sign signs payload (a SessionID and a key, or a key alone: a token of the
// old form) as a cookie value of the Env.
func (e *Env) sign(t testing.TB, payload []byte) string {
	t.Helper()
	return signKey(t, e.cookieName, payload, e.hashKey)
}

// keyOf returns the session key in a cookie value signed with the Env's key.
func (e *Env) keyOf(value string) ([]byte, bool) {
	key, _, ok := e.credOf(value)
	return key, ok
}

// credOf returns the session key and SessionID (zero in a token of the old
// form) in a cookie value signed with the Env's key.
func (e *Env) credOf(value string) ([]byte, pgsession.SessionID, bool) {
	payload, err := unsign(e.cookieName, value, e.hashKey)
	if err != nil {
		return nil, pgsession.SessionID{}, false
	}
	key, sid := splitToken(payload)
	return key, sid, true
}

// splitToken returns the key and SessionID a token's payload carries: a
// SessionID and a key (48 bytes), or a key alone (the old form).
func splitToken(payload []byte) ([]byte, pgsession.SessionID) {
	var sid pgsession.SessionID
	if len(payload) == len(sid)+32 {
		copy(sid[:], payload)
		return payload[len(sid):], sid
	}
	return payload, sid
}

// codec is the cookie format pgsession uses: securecookie, raw bytes, no
// timestamp limit.
func codec(hashKey []byte) *securecookie.SecureCookie {
	return securecookie.New(hashKey, nil).MaxAge(0).SetSerializer(securecookie.NopEncoder{})
}

// signKey signs key as the value of cookie name with hashKey.
func signKey(t testing.TB, name string, key, hashKey []byte) string {
	t.Helper()
	v, err := codec(hashKey).Encode(name, key)
	if err != nil {
		t.Fatalf("pgsessiontest: sign: %v", err)
	}
	return v
}

// unsign returns the key in value, a cookie name signed with hashKey.
func unsign(name, value string, hashKey []byte) ([]byte, error) {
	var key []byte
	err := codec(hashKey).Decode(name, value, &key)
	return key, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
