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
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// keyLength is the number of random bytes in a session key.
const keyLength = 32

// tokenLength is the number of bytes a token signs: the session's ID and
// its key. Tokens issued before the session ID went in sign the key alone
// (keyLength bytes); they are still accepted.
const tokenLength = len(SessionID{}) + keyLength

// maxCookieValue bounds the encoded cookie value we try to verify. A genuine
// value is about 150 bytes; anything much longer is rejected unread.
const maxCookieValue = 512

// credential is what a verified token carries: the session key and the
// session's ID, zero in a token of the old form (key alone), whose session
// is then found by the key alone.
type credential struct {
	key []byte
	sid SessionID
	id  backend.ID // the key's hash, under which the backend stores it
}

// signer signs and verifies tokens in securecookie's format (gorilla's
// SecureCookie with a hash key only, MaxAge 0 and securecookie.NopEncoder):
// the session ID and key, 48 bytes (or, in the old form, the key alone).
// Expiry is the server's business alone, so securecookie's timestamp check
// is disabled. It does both itself rather than through a
// securecookie.SecureCookie, which builds an HMAC (hashing the key's pads)
// and formats with fmt at every call: signing a login's cookie cost 22,000
// instructions that way, 6,000 here. FuzzCookie and TestSignerFormat check
// that securecookie decodes what encode writes, and decode accepts exactly
// what securecookie accepts.
type signer struct {
	name    string
	nameBar []byte          // name + "|", the start of every MAC's input
	macs    []*sync.Pool    // of *verifier, one pool per hash key; the first signs
	seen    *verifiedValues // values that verified, to skip verifying them again
}

// verifier is the scratch space of one encode or decode: an HMAC-SHA256 of
// one hash key, and buffers, reused through a pool so that verifying a
// cookie on every request allocates nothing, and signing one only its
// value.
type verifier struct {
	mac  hash.Hash
	in   [maxCookieValue]byte
	b    [maxCookieValue]byte
	sum  [sha256.Size]byte
	keyb [tokenLength + 2]byte
}

func newSigner(name string, hashKeys [][]byte) signer {
	s := signer{name: name, nameBar: []byte(name + "|"), macs: make([]*sync.Pool, len(hashKeys)), seen: newVerifiedValues()}
	for i, k := range hashKeys {
		s.macs[i] = &sync.Pool{New: func() any { return &verifier{mac: hmac.New(sha256.New, k)} }}
	}
	return s
}

// encode returns the token of the session sid with key, signed with the
// first hash key: sid and key, in this order, are its payload. id is the
// key's hash, or zero for encode to compute it. The token is remembered as
// verified (see verifiedValues), so the client's next request, which sends
// it back, costs no verification.
func (s signer) encode(sid SessionID, key []byte, id backend.ID) string {
	var payload [tokenLength]byte
	copy(payload[copy(payload[:], sid[:]):], key)
	v := s.macs[0].Get().(*verifier)
	value := v.sign(s.nameBar, time.Now().Unix(), payload[:])
	s.macs[0].Put(v)
	if sid != (SessionID{}) { // always: a zero ID would not verify
		if id == (backend.ID{}) {
			id = idOf(key)
		}
		s.seen.put(value, credential{key: key, sid: sid, id: id}, true)
	}
	return value
}

// sign returns securecookie's value of payload at the Unix time date:
// base64url(date|base64url(payload)|mac), with mac the HMAC-SHA256 of
// "name|date|base64url(payload)" (nameBar is "name|").
func (v *verifier) sign(nameBar []byte, date int64, payload []byte) string {
	b := strconv.AppendInt(v.b[:0], date, 10)
	b = append(b, '|')
	n := len(b)
	b = b[:n+base64.URLEncoding.EncodedLen(len(payload))]
	base64.URLEncoding.Encode(b[n:], payload)
	v.mac.Reset()
	v.mac.Write(nameBar)
	v.mac.Write(b)
	b = v.mac.Sum(append(b, '|'))
	return base64.URLEncoding.EncodeToString(b)
}

// decode verifies value with every hash key and returns the credential it
// carries, or false. It never touches the database. It accepts exactly what
// securecookie's Decode accepts for a 48-byte payload (or a 32-byte one, a
// token of the old form) with the codec's settings (FuzzCookie checks both
// agree), without its per-call allocations: value is
// base64url("date|base64url(payload)|mac"), with mac the HMAC-SHA256 of
// "name|date|base64url(payload)".
func (s signer) decode(value string) (credential, bool) {
	c, _, ok := s.decodeCurrent(value)
	return c, ok
}

// decodeCurrent is decode, and also reports whether value is current: of
// the new form and signed with the first hash key. Such a value is exactly
// what encode would return for the credential but for its timestamp, which
// nothing checks, so it can be sent again as is instead of signing anew.
func (s signer) decodeCurrent(value string) (c credential, current, ok bool) {
	if len(value) > maxCookieValue {
		return credential{}, false, false
	}
	if c, current, ok := s.seen.get(value); ok {
		return c, current, true
	}
	for i, pool := range s.macs {
		v := pool.Get().(*verifier)
		c, ok := v.verify(s.nameBar, value)
		pool.Put(v)
		if ok {
			c.id = idOf(c.key)
			current := i == 0 && c.sid != (SessionID{})
			s.seen.put(value, c, current)
			return c, current, true
		}
	}
	return credential{}, false, false
}

// verify is decode with one hash key.
func (v *verifier) verify(nameBar []byte, value string) (credential, bool) {
	n := copy(v.in[:], value)
	m, err := base64.URLEncoding.Decode(v.b[:], v.in[:n])
	if err != nil {
		return credential{}, false
	}
	b := v.b[:m]
	date, rest, ok := bytes.Cut(b, []byte("|"))
	if !ok {
		return credential{}, false
	}
	enc, mac, ok := bytes.Cut(rest, []byte("|"))
	if !ok || len(mac) != sha256.Size {
		return credential{}, false
	}
	v.mac.Reset()
	v.mac.Write(nameBar)
	v.mac.Write(b[:len(b)-len(mac)-1])
	if subtle.ConstantTimeCompare(v.mac.Sum(v.sum[:0]), mac) != 1 {
		return credential{}, false
	}
	if _, err := strconv.ParseInt(string(date), 10, 64); err != nil {
		return credential{}, false
	}
	if base64.URLEncoding.DecodedLen(len(enc)) > len(v.keyb) {
		return credential{}, false
	}
	k, err := base64.URLEncoding.Decode(v.keyb[:], enc)
	if err != nil || (k != tokenLength && k != keyLength) {
		return credential{}, false
	}
	var c credential
	if k == tokenLength {
		k = copy(c.sid[:], v.keyb[:])
		if c.sid == (SessionID{}) {
			return credential{}, false // never issued: a zero ID means the old form
		}
	} else {
		k = 0
	}
	c.key = bytes.Clone(v.keyb[k : k+keyLength])
	return c, true
}

// maxCookies is net/http's limit on the cookies of a request (its
// default httpcookiemaxnum): a request with more has none.
const maxCookies = 3000

// cookiesWithinLimit reports whether the Cookie header lines hold at most
// maxCookies cookies, counted as net/http counts them. Beyond that,
// net/http's Request.Cookies returns none, and so does the middleware.
func cookiesWithinLimit(lines []string) bool {
	n := 0
	for _, line := range lines {
		n += strings.Count(line, ";") + 1
	}
	return n <= maxCookies
}

// nextCookie returns the value of the first cookie named name in line, a
// Cookie header line or the rest of one that nextCookie returned, and the
// rest of the line after it. It splits and trims as net/http's
// Request.CookiesNamed does (surrounding double quotes are removed), without
// its allocations; it does not check the value's bytes, as a value counts
// only once it verifies (signer.decodeCurrent), and a value of any other
// bytes does not.
func nextCookie(line, name string) (value, rest string, ok bool) {
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		n, v, _ := strings.Cut(textproto.TrimString(part), "=")
		if textproto.TrimString(n) != name {
			continue
		}
		if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, line, true
	}
	return "", "", false
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
		b = appendHTTPDate(append(b, "; Expires="...), expires)
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

// appendHTTPDate appends t as t.UTC().AppendFormat(b, http.TimeFormat)
// does ("Mon, 02 Jan 2006 15:04:05 GMT"), for a year of four digits, at a
// tenth of its cost; other years take AppendFormat.
func appendHTTPDate(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 1000 || year > 9999 {
		return t.AppendFormat(b, http.TimeFormat)
	}
	hour, minute, second := t.Clock()
	two := func(b []byte, n int) []byte { return append(b, byte('0'+n/10), byte('0'+n%10)) }
	b = append(append(b, t.Weekday().String()[:3]...), ", "...)
	b = append(two(b, day), ' ')
	b = append(append(b, month.String()[:3]...), ' ')
	b = append(two(two(b, year/100), year%100), ' ')
	b = append(two(append(two(append(two(b, hour), ':'), minute), ':'), second), " GMT"...)
	return b
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
