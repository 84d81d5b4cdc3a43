package pgsession

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/securecookie"
)

// keyLength is the number of random bytes in a session key.
const keyLength = 32

// maxCookieValue bounds the encoded cookie value we try to verify. A genuine
// value is about 120 bytes; anything much longer is rejected unread.
const maxCookieValue = 512

// signer signs and verifies session keys in securecookie's format.
// Expiry is the server's business alone, so securecookie's timestamp check
// is disabled.
type signer struct {
	name    string
	nameBar []byte             // name + "|", the start of every MAC's input
	codec   securecookie.Codec // signs, with the first hash key
	macs    []*sync.Pool       // of *verifier, one pool per hash key: they verify
}

// verifier is the scratch space of one decode: an HMAC-SHA256 of one hash
// key, and buffers, reused through a pool so that verifying a cookie on
// every request allocates only the key it returns.
type verifier struct {
	mac  hash.Hash
	in   [maxCookieValue]byte
	b    [maxCookieValue]byte
	sum  [sha256.Size]byte
	keyb [keyLength + 2]byte
}

func newSigner(name string, hashKeys [][]byte) signer {
	s := signer{name: name, nameBar: []byte(name + "|"), macs: make([]*sync.Pool, len(hashKeys)),
		codec: securecookie.New(hashKeys[0], nil).
			MaxAge(0). // no wall-clock limit: AbsoluteTimeout may exceed 30 days
			MaxLength(maxCookieValue).
			SetSerializer(securecookie.NopEncoder{})}
	for i, k := range hashKeys {
		s.macs[i] = &sync.Pool{New: func() any { return &verifier{mac: hmac.New(sha256.New, k)} }}
	}
	return s
}

// encode returns the signed form of key, signed with the first hash key.
func (s signer) encode(key []byte) (string, error) {
	return s.codec.Encode(s.name, key)
}

// decode verifies value with every hash key and returns the session key it
// carries, or false. It never touches the database. It accepts exactly what
// securecookie's Decode accepts for a 32-byte key with the codec's settings
// (FuzzCookie checks both agree), without its per-call allocations:
// value is base64url("date|base64url(key)|mac"), with mac the HMAC-SHA256
// of "name|date|base64url(key)".
func (s signer) decode(value string) ([]byte, bool) {
	key, _, ok := s.decodeCurrent(value)
	return key, ok
}

// decodeCurrent is decode, and also reports whether the first hash key
// signed value: such a value is exactly what encode would return for the
// key but for its timestamp, which nothing checks, so it can be sent again
// as is instead of signing the key anew.
func (s signer) decodeCurrent(value string) (key []byte, current, ok bool) {
	if len(value) > maxCookieValue {
		return nil, false, false
	}
	for i, pool := range s.macs {
		v := pool.Get().(*verifier)
		key, ok := v.verify(s.nameBar, value)
		pool.Put(v)
		if ok {
			return key, i == 0, true
		}
	}
	return nil, false, false
}

// verify is decode with one hash key.
func (v *verifier) verify(nameBar []byte, value string) ([]byte, bool) {
	n := copy(v.in[:], value)
	m, err := base64.URLEncoding.Decode(v.b[:], v.in[:n])
	if err != nil {
		return nil, false
	}
	b := v.b[:m]
	date, rest, ok := bytes.Cut(b, []byte("|"))
	if !ok {
		return nil, false
	}
	enc, mac, ok := bytes.Cut(rest, []byte("|"))
	if !ok || len(mac) != sha256.Size {
		return nil, false
	}
	v.mac.Reset()
	v.mac.Write(nameBar)
	v.mac.Write(b[:len(b)-len(mac)-1])
	if subtle.ConstantTimeCompare(v.mac.Sum(v.sum[:0]), mac) != 1 {
		return nil, false
	}
	if _, err := strconv.ParseInt(string(date), 10, 64); err != nil {
		return nil, false
	}
	if base64.URLEncoding.DecodedLen(len(enc)) > len(v.keyb) {
		return nil, false
	}
	k, err := base64.URLEncoding.Decode(v.keyb[:], enc)
	if err != nil || k != keyLength {
		return nil, false
	}
	return bytes.Clone(v.keyb[:k]), true
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive, RFC 9110).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// newKey returns a fresh random session key from crypto/rand.
func newKey() []byte {
	key := make([]byte, keyLength)
	// crypto/rand.Read never returns an error and always fills the buffer
	// (Go 1.24+); it crashes the program irrecoverably if the OS fails.
	_, _ = rand.Read(key)
	return key
}

// cookie returns the cookie name=value with the configured attributes,
// expiring at expires (zero for a browser-session cookie), as seen from now.
func (c CookieConfig) cookie(name, value string, expires, now time.Time) *http.Cookie {
	ck := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     c.Path,
		Domain:   c.Domain,
		Secure:   !c.Insecure,
		HttpOnly: true,
		SameSite: c.SameSite,
	}
	if !expires.IsZero() {
		ck.Expires = expires.UTC()
		ck.MaxAge = maxAge(expires, now)
	}
	return ck
}

// maxAge is a cookie's Max-Age in seconds for expires, at least 1 (0 would
// mean "no Max-Age" to net/http).
func maxAge(expires, now time.Time) int {
	return max(int(expires.Sub(now)/time.Second), 1)
}

// sessionHeader returns the Set-Cookie value of the session cookie holding
// value: cookie(c.Name, value, expires, now).String(), without the
// validation String repeats on every call. New checked the name and path,
// and a signed value is base64url, so there is nothing to sanitize; a
// Domain (whose rules String applies) takes String's path.
func (c CookieConfig) sessionHeader(value string, expires, now time.Time) string {
	if c.Domain != "" {
		return c.cookie(c.Name, value, expires, now).String()
	}
	b := make([]byte, 0, len(c.Name)+len(value)+len(c.Path)+110)
	b = append(append(append(b, c.Name...), '='), value...)
	b = append(append(b, "; Path="...), c.Path...)
	if !expires.IsZero() {
		b = expires.UTC().AppendFormat(append(b, "; Expires="...), http.TimeFormat)
		b = strconv.AppendInt(append(b, "; Max-Age="...), int64(maxAge(expires, now)), 10)
	}
	b = append(b, "; HttpOnly"...)
	if !c.Insecure {
		b = append(b, "; Secure"...)
	}
	switch c.SameSite {
	case http.SameSiteLaxMode:
		b = append(b, "; SameSite=Lax"...)
	case http.SameSiteStrictMode:
		b = append(b, "; SameSite=Strict"...)
	case http.SameSiteNoneMode:
		b = append(b, "; SameSite=None"...)
	}
	return string(b)
}

// indicator returns the public indicator cookie: readable by scripts, it
// holds no secret, only the session's expiry in Unix seconds (0 for a
// browser-session cookie), so a front end knows a session may exist.
func (c CookieConfig) indicator(expires, now time.Time) *http.Cookie {
	v := "0"
	if !expires.IsZero() {
		v = strconv.FormatInt(expires.Unix(), 10)
	}
	ck := c.cookie(c.IndicatorName, v, expires, now)
	ck.HttpOnly = false
	return ck
}

// expired returns a cookie that tells the client to drop cookie name.
func (c CookieConfig) expired(name string) *http.Cookie {
	ck := c.cookie(name, "", time.Time{}, time.Time{})
	ck.Expires = time.Unix(1, 0).UTC()
	ck.MaxAge = -1
	return ck
}
