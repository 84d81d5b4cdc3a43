package pgsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// FuzzRequestSequence decodes its input into a sequence of up to
// seqMaxOps operations, three bytes each, and runs them through a real
// httptest.Server serving the middleware on the memory backend
// (CookieOrBearer, PrincipalKey "user", unprefixed cookie name, injected
// clock, no idle timeout, a one-hour absolute timeout). Five clients take
// part: u0 on two devices, u1, u2, and an attacker, mallory. The operations
// are logins, counter increments, reads, logouts and rotations (each by
// cookie or bearer token), replays of dead cookies and tokens, forged
// cookies and tokens, cookie tossing (the attacker's cookie beside a
// victim's), clock jumps and DeleteByPrincipal.
//
// An exact model (which key holds which row, its user, counter and creation
// time; which keys are dead) predicts every response: the session shown
// (none when two live sessions' cookies arrive together), the Set-Cookie
// (none, the same key, a fresh key, or an expiry: an update of a live
// session sends none, as its cookie's expiry is the creation plus the
// absolute timeout already; a request whose keys all name nothing gets an
// expiry) and the token. Besides,
// after every request: status 200; Vary names Cookie and Authorization; a
// response setting the session cookie is no-store (or private when the
// handler chose public caching); a dead key never shows a session and never
// comes back in a cookie or token; a new key is one never seen before (a
// presented key is never adopted); a request whose credentials do not verify
// costs no backend load; a client sees only its own user (outside cookie
// tossing, where a victim without a live session is served as the attacker:
// the documented limit of unprefixed names, which the model predicts). After each
// DeleteByPrincipal the count is predicted, and at the end every user's rows
// in the backend match the model. Seeds: testdata/fuzz/FuzzRequestSequence.
func FuzzRequestSequence(f *testing.F) {
	var current atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*current.Load()).ServeHTTP(w, r)
	}))
	f.Cleanup(srv.Close)

	f.Fuzz(func(t *testing.T, prog []byte) {
		r := newSeqRig(t, srv)
		h := r.m.Middleware(seqHandler())
		current.Store(&h)
		for i := 0; i+2 < len(prog) && i/3 < seqMaxOps; i += 3 {
			r.step(prog[i], prog[i+1], prog[i+2])
		}
		r.checkRows()
	})
}

const (
	seqMaxOps   = 64
	seqAttacker = 4 // the client index of mallory
	seqTimeout  = time.Hour
)

// The handler's operations, by URL path.
const (
	seqLogin = iota
	seqInc
	seqRead
	seqLogout
	seqRotate
)

var (
	seqOpNames = [...]string{"login", "inc", "read", "logout", "rotate"}
	seqUsers   = [...]string{"u0", "u0", "u1", "u2", "mallory"} // by client
)

// seqBody is the handler's answer: the session as loaded, and the token of
// the session as the request leaves it.
type seqBody struct {
	Had   bool   `json:"had"`
	User  string `json:"user"`
	N     int    `json:"n"`
	Token string `json:"token,omitempty"`
}

// seqHandler serves /login?u=, /inc (only when logged in), /read, /logout
// and /rotate; ?public=1 makes it ask for public caching.
func seqHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s := pgsession.FromContext(ctx)
		var b seqBody
		had, err := s.Get("user", &b.User)
		b.Had = had
		if err == nil {
			_, err = s.Get("n", &b.N)
		}
		if err == nil {
			switch r.URL.Path {
			case "/login":
				err = errors.Join(s.Clear(), s.Set("user", r.FormValue("u")), s.Set("n", 0), pgsession.RotateKey(ctx))
			case "/inc":
				if had {
					err = s.Set("n", b.N+1)
				}
			case "/read":
			case "/logout":
				err = errors.Join(s.Clear(), pgsession.RotateKey(ctx))
			case "/rotate":
				err = pgsession.RotateKey(ctx)
			default:
				err = fmt.Errorf("unknown path %q", r.URL.Path)
			}
		}
		if err == nil {
			b.Token, err = pgsession.Token(ctx)
			if errors.Is(err, pgsession.ErrEmptySession) {
				err = nil
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		if r.FormValue("public") != "" {
			w.Header().Set("Cache-Control", "public, max-age=60")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b)
	})
}

// seqRow is the model of one stored row.
type seqRow struct {
	owner   int // the client that logged in; -1 for an anonymous attacker request
	user    string
	n       int
	created time.Time
	prev    string // the key a rotation moved it from ("" for an insert)
}

// seqRig runs one sequence and holds the model.
type seqRig struct {
	t       *testing.T
	client  *http.Client
	url     string
	m       *pgsession.Manager
	backend *countingMemory
	clock   *atomic.Int64
	now     time.Time
	codec   *securecookie.SecureCookie
	name    string

	rows       map[string]*seqRow  // key -> row in the backend (expired or not)
	dead       map[string]bool     // keys deleted or expired: never valid again
	seen       map[string]bool     // every key issued or presented so far
	values     map[string][]string // the signed values seen for each key
	sids       map[string]string   // key -> the session ID its tokens carry, as the server issued them
	allValues  []string            // every signed value seen, in order
	issued     []string            // every key issued, in order
	deadValues []string            // the values of dead keys, in order
	jar, token [5]string           // each client's cookie and bearer token
	forgeries  int
	trace      []string
}

func newSeqRig(t *testing.T, srv *httptest.Server) *seqRig {
	r := &seqRig{
		t: t, client: srv.Client(), url: srv.URL,
		backend: &countingMemory{MemoryBackend: pgsession.NewMemoryBackend()},
		clock:   new(atomic.Int64), now: fuzzNow,
		codec: fuzzCodec(),
		rows:  map[string]*seqRow{}, dead: map[string]bool{}, seen: map[string]bool{}, values: map[string][]string{}, sids: map[string]string{},
	}
	r.clock.Store(r.now.UnixNano())
	m, err := pgsession.New(pgsession.Config{
		Backend: r.backend, HashKeys: [][]byte{fuzzHashKey},
		Carrier: pgsession.CookieOrBearer, PrincipalKey: "user",
		Cookie:      pgsession.CookieConfig{Insecure: true},
		IdleTimeout: -1, AbsoluteTimeout: seqTimeout,
		// The model's keys die when rotated away: the grace window for
		// requests in flight is the race tests' (pgsessiontest/race.go).
		RotationGrace: -1,
		Now:           func() time.Time { return time.Unix(0, r.clock.Load()).UTC() },
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.m, r.name = m, m.CookieName()
	if r.name != pgsession.DefaultCookieName {
		t.Fatalf("cookie name %q, want %q (fuzzCodec signs for it)", r.name, pgsession.DefaultCookieName)
	}
	return r
}

func (r *seqRig) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("after:\n  %s\n%s", strings.Join(r.trace, "\n  "), fmt.Sprintf(format, args...))
}

// decode returns the session key value carries, as the Manager would verify
// it (at most 512 bytes signed for the cookie name: a session ID, not zero,
// and a 32-byte key, or a 32-byte key alone, the old form).
func (r *seqRig) decode(value string) (string, bool) {
	if value == "" || len(value) > 512 {
		return "", false
	}
	var payload []byte
	if r.codec.Decode(r.name, value, &payload) != nil {
		return "", false
	}
	switch {
	case len(payload) == 32:
		return string(payload), true
	case len(payload) == 48 && !bytes.Equal(payload[:16], make([]byte, 16)):
		// A key presented with another session ID than the server issued
		// it with verifies, but names no row (every statement keys a row
		// by both): a credential of its own, unknown to the backend.
		if sid, ok := r.sids[string(payload[16:])]; ok && sid != string(payload[:16]) {
			return string(payload), true
		}
		return string(payload[16:]), true
	}
	return "", false
}

func (r *seqRig) expired(row *seqRow) bool { return r.now.Sub(row.created) >= seqTimeout }

// successor returns the key of the row that a rotation moved from key (the
// backend's Load finds it by its immediate predecessor), or "".
func (r *seqRig) successor(key string) string {
	for k, row := range r.rows {
		if row.prev == key {
			return k
		}
	}
	return ""
}

// kill marks key dead and, if deleted, removes its row.
func (r *seqRig) kill(key string, deleted bool) {
	if deleted {
		delete(r.rows, key)
	}
	if !r.dead[key] {
		r.dead[key] = true
		r.deadValues = append(r.deadValues, r.values[key]...)
	}
}

func (r *seqRig) remember(key, value string) {
	var payload []byte
	if _, known := r.sids[key]; !known && r.codec.Decode(r.name, value, &payload) == nil && len(payload) == 48 {
		r.sids[key] = string(payload[:16])
	}
	if !slices.Contains(r.values[key], value) {
		r.values[key] = append(r.values[key], value)
		r.allValues = append(r.allValues, value)
		if r.dead[key] {
			r.deadValues = append(r.deadValues, value)
		}
	}
}

// step runs one operation.
func (r *seqRig) step(op, a, b byte) {
	r.t.Helper()
	switch op % 12 {
	case seqLogin, seqInc, seqRead, seqLogout, seqRotate:
		who := int(a) % 5
		req := seqReq{who: who, op: int(op % 12), public: b&4 != 0}
		if b&1 != 0 && r.token[who] != "" {
			req.bearer = r.token[who]
			if b&2 != 0 {
				req.cookies = nonEmpty(r.jar[who])
			}
		} else {
			req.cookies = nonEmpty(r.jar[who])
		}
		r.do(req)
	case 5: // the attacker replays a dead cookie or token
		if len(r.deadValues) == 0 {
			return
		}
		v := r.deadValues[int(a)%len(r.deadValues)]
		r.do(r.anonymous(v, b))
	case 6: // the attacker forges a cookie or token
		v, desc := r.forge(a, b)
		r.trace = append(r.trace, "forge: "+desc)
		r.do(r.anonymous(v, b))
	case 7: // the attacker tosses its cookie in beside a victim's
		victim := int(a) % 4
		req := seqReq{who: victim, op: []int{seqRead, seqInc, seqLogout}[int(b>>1)%3], toss: true, public: b&0x80 != 0}
		req.cookies = nonEmpty(r.jar[seqAttacker], r.jar[victim])
		if b&1 != 0 {
			slices.Reverse(req.cookies)
		}
		r.do(req)
	case 8:
		r.advance(time.Minute)
	case 9:
		r.advance(30 * time.Minute)
	case 10:
		r.advance(2 * time.Hour)
	case 11:
		r.deleteByPrincipal(seqUsers[int(a)%5])
	}
}

func nonEmpty(values ...string) []string {
	var out []string
	for _, v := range values {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// anonymous is an attacker's request carrying only value, as a cookie or
// (b&1) a bearer token, doing the handler operation b>>1.
func (r *seqRig) anonymous(value string, b byte) seqReq {
	req := seqReq{who: -1, op: int(b>>1) % 5, public: b&0x80 != 0}
	if b&1 != 0 {
		req.bearer = value
	} else {
		req.cookies = []string{value}
	}
	return req
}

// forge returns a value no client was given: it does not verify, except a
// well-signed unknown key (as with a leaked hash key), which is never
// adopted.
func (r *seqRig) forge(a, b byte) (string, string) {
	r.forgeries++
	key := []byte("forged-forged-forged-forged-key!")
	if len(r.issued) > 0 {
		key = []byte(r.issued[int(b)%len(r.issued)])
	}
	encode := func(c *securecookie.SecureCookie, name string, v []byte) string {
		s, err := c.Encode(name, v)
		if err != nil {
			r.fatalf("forge: %v", err)
		}
		return s
	}
	switch a % 7 {
	case 0:
		other := securecookie.New([]byte(strings.Repeat("o", 32)), nil).MaxAge(0).SetSerializer(securecookie.NopEncoder{})
		return encode(other, r.name, key), "a real key signed with another hash key"
	case 1:
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
		g := make([]byte, 1+int(b)%150)
		x := uint32(a)<<8 | uint32(b) | 1
		for i := range g {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			g[i] = alphabet[x%uint32(len(alphabet))]
		}
		return string(g), "garbage"
	case 2:
		if len(r.allValues) == 0 {
			return "x", "garbage"
		}
		v := r.allValues[int(b)%len(r.allValues)]
		return v[:len(v)-1-int(a>>3)%(len(v)-1)], "a truncated value"
	case 3:
		return encode(r.codec, "__Host-"+r.name, key), "a real key signed for another cookie name"
	case 4:
		return encode(r.codec, r.name, key[:16]), "a 16-byte key"
	case 5:
		return strings.Repeat("A", 513+int(b)), "an oversized value"
	default:
		var k [32]byte
		binary.BigEndian.PutUint64(k[:], uint64(r.forgeries))
		k = sha256.Sum256(append(k[:8], a, b))
		if len(r.issued) > 0 && b%2 == 1 {
			return encode(r.codec, r.name, append(k[:16], key...)), "a real key with another session ID"
		}
		return encode(r.codec, r.name, k[:]), "a well-signed unknown key"
	}
}

func (r *seqRig) advance(d time.Duration) {
	r.now = r.now.Add(d)
	r.clock.Store(r.now.UnixNano())
	r.trace = append(r.trace, fmt.Sprintf("clock +%v", d))
	for k, row := range r.rows {
		if r.expired(row) {
			r.kill(k, false)
		}
	}
}

func (r *seqRig) deleteByPrincipal(user string) {
	r.trace = append(r.trace, "DeleteByPrincipal "+user)
	var want []string
	for k, row := range r.rows {
		if row.user == user {
			want = append(want, k)
		}
	}
	n, err := r.m.DeleteByPrincipal(context.Background(), user)
	if err != nil || n != len(want) {
		r.fatalf("DeleteByPrincipal(%q) = %d, %v; want %d", user, n, err, len(want))
	}
	for _, k := range want {
		r.kill(k, true)
	}
}

// checkRows compares each user's rows in the backend with the model.
func (r *seqRig) checkRows() {
	for _, user := range seqUsers[1:] {
		recs, err := r.backend.ListByPrincipal(context.Background(), user)
		if err != nil {
			r.fatalf("ListByPrincipal(%q): %v", user, err)
		}
		var want []backend.ID
		for k, row := range r.rows {
			if row.user == user {
				want = append(want, sha256.Sum256([]byte(k)))
			}
		}
		if len(recs) != len(want) {
			r.fatalf("%s has %d rows in the backend, want %d", user, len(recs), len(want))
		}
		for _, rec := range recs {
			if !slices.Contains(want, rec.ID) {
				r.fatalf("%s has a row %x the model does not know", user, rec.ID[:4])
			}
		}
	}
}
