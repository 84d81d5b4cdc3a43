package pgsession

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultIdleTimeout       = 8 * time.Hour
	DefaultAbsoluteTimeout   = 30 * 24 * time.Hour
	DefaultTimeoutResolution = 10 * time.Minute
	// DefaultRotationGrace is the RotationGrace of a zero Config field: as
	// long as a request may be in flight, one client timeout (URLSession's
	// default is 60s; a browser's parallel requests finish in seconds), and
	// shorter than any renewal period worth configuring.
	DefaultRotationGrace = time.Minute
	// DefaultCookieName is the session cookie's base name. Unless
	// CookieConfig.Name says otherwise, a Secure cookie with Path "/" and no
	// Domain (the defaults) is named "__Host-session-key", another Secure
	// cookie "__Secure-session-key", and an Insecure one "session-key".
	DefaultCookieName  = "session-key"
	DefaultMaxDataSize = 64 << 10
	// MinHashKeyLength is the shortest HMAC key New accepts, in bytes.
	MinHashKeyLength = 32
)

// Config configures a Manager. Only Backend and HashKeys are required; every
// other zero field takes the documented default.
type Config struct {
	// Backend stores the sessions: NewPostgresBackend or NewMemoryBackend.
	Backend backend.Backend

	// HashKeys are the HMAC-SHA256 keys that sign cookies, each at least
	// MinHashKeyLength bytes of secret randomness. The first signs new
	// cookies; all of them verify, so a secret is rotated by putting the new
	// key first and keeping the old one until its cookies have expired.
	HashKeys [][]byte

	// IdleTimeout ends a session this long after its last access.
	// Zero means DefaultIdleTimeout (8h); negative disables idle expiry.
	IdleTimeout time.Duration

	// AbsoluteTimeout ends a session this long after it was created (or its
	// key last rotated), however active it is. Zero means
	// DefaultAbsoluteTimeout (30 days); negative disables it.
	AbsoluteTimeout time.Duration

	// TimeoutResolution is how stale the stored access time may get before a
	// request that changed nothing writes it again. Zero means the smaller of
	// DefaultTimeoutResolution (10m) and IdleTimeout/8, so any IdleTimeout
	// works as given: with the default 8h it is 10m, with a 5m IdleTimeout
	// 37.5s. The eighth bounds how early a session may end (at most 12.5% of
	// IdleTimeout) and the writes an active session costs (at most about 8
	// per IdleTimeout). Negative disables the optimisation, so every request
	// writes its access time. A positive value must be smaller than
	// IdleTimeout. Because the stored time lags by up to this much, a session
	// may expire up to TimeoutResolution earlier than IdleTimeout after the
	// real last access.
	TimeoutResolution time.Duration

	// Cookie configures the session cookie.
	Cookie CookieConfig

	// Carrier says where requests carry their session key: the cookie
	// (CookieOnly, the default), the "Authorization: Bearer" header
	// (BearerOnly, for APIs), or either (CookieOrBearer).
	Carrier Carrier

	// PrincipalKey names the session key that says who is logged in (for
	// example "user_id"). Its value is then also stored in an indexed column,
	// so Manager.DeleteByPrincipal can log a user out everywhere and
	// ListByPrincipal can show their sessions; and a request that changes it
	// rotates the key automatically, so a login stays safe from session
	// fixation even without RotateKey. Empty means sessions have no principal.
	PrincipalKey string

	// Device, if set, records the client of each session when it is
	// created or its key rotated (see Device and DeviceFromRequest), for
	// ListByPrincipal's device list. Nil records nothing: user agents and
	// addresses are personal data, so recording them is opt-in.
	Device func(r *http.Request) Device

	// RotationGrace is how long a key that a rotation retired is still
	// recognised, for the requests the client had in flight when the
	// rotation happened (a page's parallel XHRs, prefetches, a mobile app's
	// calls: the regenerate race). Such a request never creates a session
	// and never gets a Set-Cookie that would replace the client's new one.
	// After a renewal (a rotation that keeps the PrincipalKey's value, from
	// RotateKey, RotateWhen or RenewAfter) it is served the session, reads
	// and writes, without a new key; after a login, a logout or a change of
	// user (any rotation without a PrincipalKey) it sees an empty session,
	// and a change it makes is refused with ErrStaleKey (409), so the old
	// key never reads or writes the new session (no fixation). Only the
	// immediate predecessor is recognised, never an older key, and
	// "log out everywhere", deletion and expiry end it with the session.
	// Zero means DefaultRotationGrace (1m); negative disables it, so a
	// retired key is dead at once.
	RotationGrace time.Duration

	// RenewAfter, if positive, renews the key of a signed-in session (one
	// whose PrincipalKey value is set) at its first request through the
	// middleware with a cookie once the key is this old (since its creation
	// or last rotation): OWASP's renewal timeout, so that a stolen key stops
	// working without a new login. The renewal keeps the data, the
	// principal and the creation time (the AbsoluteTimeout runs on), and
	// the client's requests in flight keep working (see RotationGrace). It
	// needs PrincipalKey and a positive RotationGrace, and must be longer
	// than RotationGrace. Requests with a bearer token are not renewed by
	// it: their client gets a new token only from the application (RotateKey
	// and Token). Zero disables it.
	RenewAfter time.Duration

	// RotateWhen, if set, is called when a live session is saved with the data
	// as loaded and as the request leaves it; returning true rotates the key
	// as if RotateKey had been called. It must not modify the maps.
	RotateWhen func(old, new map[string]json.RawMessage) bool

	// MaxDataSize bounds the size of one session's data in bytes, counted as
	// the sum over its keys of len(key) + len(JSON value) + 4 (about the size
	// of the stored JSON object); Set returns ErrTooLarge rather than exceed
	// it. Zero means DefaultMaxDataSize (64 KiB).
	MaxDataSize int

	// Now returns the current time. Nil means time.Now. Tests inject a clock.
	Now func() time.Time

	// ErrorHandler writes the response when the session cannot be loaded or
	// saved (the handler's own response is then discarded). Nil means a plain
	// 409 Conflict for an error wrapping ErrStaleKey (the request's change
	// lost to a concurrent rotation or logout; a retry may succeed) and a
	// plain 500 Internal Server Error for any other. The error is logged
	// before it is called.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Logger receives errors and misuse reports. Nil means slog.Default().
	Logger *slog.Logger
}

// Carrier says how requests carry their session key.
type Carrier uint8

const (
	// CookieOnly reads and sets the session cookie; an Authorization header
	// is ignored. The default.
	CookieOnly Carrier = iota
	// BearerOnly reads the signed key from an "Authorization: Bearer <token>"
	// header only, for APIs and mobile clients: no cookie is read or set, so
	// a browser's ambient credentials can never log it in or out (no CSRF or
	// login CSRF through cookies). Handlers hand tokens out with Token.
	BearerOnly
	// CookieOrBearer accepts both. A request with a valid bearer token uses
	// it and gets no Set-Cookie; other requests use the cookie. A browser
	// client of such an app is exposed to CSRF like any cookie client.
	CookieOrBearer
)

// String returns the constant's name.
func (c Carrier) String() string {
	switch c {
	case CookieOnly:
		return "CookieOnly"
	case BearerOnly:
		return "BearerOnly"
	case CookieOrBearer:
		return "CookieOrBearer"
	}
	return fmt.Sprintf("Carrier(%d)", uint8(c))
}

func (c Carrier) cookies() bool { return c != BearerOnly }
func (c Carrier) bearer() bool  { return c != CookieOnly }

// CookieConfig configures the session cookie. The cookie is always HttpOnly.
type CookieConfig struct {
	// Name of the cookie. Zero means DefaultCookieName with the strongest
	// prefix the other attributes allow: "__Host-session-key" by default, so
	// that browsers refuse copies set by a sibling subdomain or over plain
	// HTTP (cookie tossing); "__Secure-session-key" with a Domain or another
	// Path; plain "session-key" when Insecure. A name with a "__Host-" or
	// "__Secure-" prefix (in any case) must meet its prefix's rules.
	Name string
	// Path of the cookie. Zero means "/".
	Path string
	// Domain of the cookie. Zero means a host-only cookie.
	Domain string
	// SameSite mode. Zero means http.SameSiteLaxMode.
	SameSite http.SameSite
	// Insecure drops the Secure attribute, for development over plain HTTP.
	// Never set it in production.
	Insecure bool
	// IndicatorName, if set, names a second cookie that scripts can read:
	// it holds no secret, only the session's expiry in Unix seconds ("0" for
	// a session-only cookie), and is set and expired with the session cookie,
	// so a front end can tell whether a session may exist before calling an
	// API. Empty means no indicator cookie.
	IndicatorName string
	// SessionOnly omits Expires and Max-Age, so the browser drops the cookie
	// when it closes (browsers that restore sessions may keep it). The
	// server enforces the timeouts either way. A cookie is also session-only
	// when both timeouts are disabled.
	SessionOnly bool
}

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("pgsession: invalid config")

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// resolve fills defaults and validates c. It returns the completed copy.
func (c Config) resolve() (Config, error) {
	if c.Backend == nil {
		return c, configError("Backend is nil (use NewPostgresBackend or NewMemoryBackend)")
	}
	if len(c.HashKeys) == 0 {
		return c, configError("no HashKeys: give at least one random key of %d bytes or more", MinHashKeyLength)
	}
	for i, k := range c.HashKeys {
		if len(k) < MinHashKeyLength {
			return c, configError("HashKeys[%d] is %d bytes, want at least %d", i, len(k), MinHashKeyLength)
		}
	}
	c.IdleTimeout = orDefault(c.IdleTimeout, DefaultIdleTimeout)
	c.AbsoluteTimeout = orDefault(c.AbsoluteTimeout, DefaultAbsoluteTimeout)
	if c.TimeoutResolution == 0 {
		c.TimeoutResolution = defaultResolution(c.IdleTimeout)
	}
	if c.IdleTimeout > 0 && c.TimeoutResolution >= c.IdleTimeout {
		return c, configError("TimeoutResolution (%v) must be smaller than IdleTimeout (%v)", c.TimeoutResolution, c.IdleTimeout)
	}
	c.RotationGrace = orDefault(c.RotationGrace, DefaultRotationGrace)
	if c.RenewAfter > 0 {
		switch {
		case c.PrincipalKey == "":
			return c, configError("RenewAfter (%v) needs PrincipalKey: only a signed-in session is renewed", c.RenewAfter)
		case c.RotationGrace <= 0 || c.RenewAfter <= c.RotationGrace:
			return c, configError("RenewAfter (%v) must be longer than a positive RotationGrace (%v), or renewals would log out clients with requests in flight",
				c.RenewAfter, c.RotationGrace)
		}
	}
	if c.MaxDataSize < 0 {
		return c, configError("MaxDataSize is negative (%d)", c.MaxDataSize)
	}
	if c.MaxDataSize == 0 {
		c.MaxDataSize = DefaultMaxDataSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = defaultErrorHandler
	}
	if c.Carrier > CookieOrBearer {
		return c, configError("unknown Carrier %d", c.Carrier)
	}
	var err error
	c.Cookie, err = c.Cookie.resolve()
	return c, err
}

// defaultResolution is the TimeoutResolution for an unset field: the smaller
// of DefaultTimeoutResolution and idle/8, or -1 (write on every request) for
// an idle timeout too short to divide.
func defaultResolution(idle time.Duration) time.Duration {
	if idle <= 0 {
		return DefaultTimeoutResolution // no idle expiry: only AbsoluteTimeout
	}
	r := min(DefaultTimeoutResolution, idle/8)
	if r <= 0 {
		return -1
	}
	return r
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func (c CookieConfig) resolve() (CookieConfig, error) {
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Name == "" {
		switch {
		case c.Insecure:
			c.Name = DefaultCookieName
		case c.Path == "/" && c.Domain == "":
			c.Name = hostPrefix + DefaultCookieName
		default:
			c.Name = securePrefix + DefaultCookieName
		}
	}
	if c.SameSite == 0 || c.SameSite == http.SameSiteDefaultMode {
		c.SameSite = http.SameSiteLaxMode
	}
	for _, name := range []string{c.Name, c.IndicatorName} {
		probe := http.Cookie{Name: name, Value: "x", Path: c.Path, Domain: c.Domain}
		if err := probe.Valid(); err != nil && name != "" {
			return c, configError("Cookie: %v", err)
		}
	}
	if strings.EqualFold(c.IndicatorName, c.Name) {
		return c, configError("Cookie: IndicatorName must differ from Name")
	}
	if c.SameSite == http.SameSiteNoneMode && c.Insecure {
		return c, configError("Cookie: SameSite=None requires Secure, but Insecure is set")
	}
	for field, name := range map[string]string{"Name": c.Name, "IndicatorName": c.IndicatorName} {
		// Browsers match the prefixes case-insensitively and silently drop a
		// cookie that breaks their rules.
		switch {
		case hasPrefixFold(name, securePrefix) && c.Insecure:
			return c, configError("Cookie: %s %q has the %s prefix, which requires Secure, but Insecure is set", field, name, securePrefix)
		case hasPrefixFold(name, hostPrefix) && (c.Insecure || c.Path != "/" || c.Domain != ""):
			return c, configError("Cookie: %s %q has the %s prefix, which requires Secure, Path \"/\" and no Domain", field, name, hostPrefix)
		}
	}
	return c, nil
}

// The cookie name prefixes browsers enforce (RFC 6265bis): a __Secure-
// cookie must be Secure; a __Host- cookie must also have Path "/" and no
// Domain, so no other host can set or shadow it.
const (
	securePrefix = "__Secure-"
	hostPrefix   = "__Host-"
)

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func defaultErrorHandler(w http.ResponseWriter, _ *http.Request, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrStaleKey) {
		code = http.StatusConflict
	}
	http.Error(w, http.StatusText(code), code)
}
