package pgsession

import (
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
)

// keyLength is the number of random bytes in a session key.
const keyLength = 32

// maxCookieValue bounds the encoded cookie value we try to verify. A genuine
// value is about 120 bytes; anything much longer is rejected unread.
const maxCookieValue = 512

// signer signs and verifies session keys with securecookie. Expiry is the
// server's business alone, so securecookie's timestamp check is disabled.
type signer struct {
	name   string
	codecs []securecookie.Codec
}

func newSigner(name string, hashKeys [][]byte) signer {
	codecs := make([]securecookie.Codec, len(hashKeys))
	for i, k := range hashKeys {
		codecs[i] = securecookie.New(k, nil).
			MaxAge(0). // no wall-clock limit: AbsoluteTimeout may exceed 30 days
			MaxLength(maxCookieValue).
			SetSerializer(securecookie.NopEncoder{})
	}
	return signer{name: name, codecs: codecs}
}

// encode returns the signed form of key, signed with the first hash key.
func (s signer) encode(key []byte) (string, error) {
	return s.codecs[0].Encode(s.name, key)
}

// decode verifies value with every hash key and returns the session key it
// carries, or false. It never touches the database.
func (s signer) decode(value string) ([]byte, bool) {
	if len(value) > maxCookieValue {
		return nil, false
	}
	for _, c := range s.codecs {
		var key []byte
		if c.Decode(s.name, value, &key) == nil && len(key) == keyLength {
			return key, true
		}
	}
	return nil, false
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
		ck.MaxAge = max(int(expires.Sub(now)/time.Second), 1)
	}
	return ck
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
