package pgsession

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// Manager loads and saves sessions around HTTP handlers. Create it with New;
// it is safe for concurrent use and holds no global state.
type Manager struct {
	cfg      Config
	p        policy
	signer   signer
	stats    counters
	observer backend.Observer // the Backend's, if it implements it
	sweeping sync.Mutex       // held during a cleanup sweep (RunCleanup)

	insecureWarned atomic.Bool // warnInsecureTransport has logged
}

// New validates cfg, applies defaults and returns a Manager. Every error it
// returns wraps ErrInvalidConfig and names the offending field.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	observer, _ := cfg.Backend.(backend.Observer)
	return &Manager{
		cfg: cfg, observer: observer,
		p: policy{idle: cfg.IdleTimeout, absolute: cfg.AbsoluteTimeout, resolution: cfg.TimeoutResolution,
			principalKey: cfg.PrincipalKey, rotateWhen: cfg.RotateWhen, sessionOnly: cfg.Cookie.SessionOnly,
			grace: cfg.RotationGrace, renewAfter: cfg.RenewAfter},
		signer: newSigner(cfg.Cookie.Name, cfg.HashKeys),
	}, nil
}

// CookieName returns the name of the session cookie, with the prefix New
// chose (see CookieConfig.Name).
func (m *Manager) CookieName() string { return m.cfg.Cookie.Name }

// Middleware wraps next so that every request carries a *Session in its
// context (see FromContext). The session is loaded before next runs and saved
// when the response starts: at the first WriteHeader, Write or Flush, at
// Hijack, or when next returns having written nothing. The body is never
// buffered. If the session cannot be loaded or saved, Config.ErrorHandler
// writes the response instead of next. A handler that panics saves nothing.
//
// A request that has ended when its session would be saved saves nothing
// (no database write, no Set-Cookie): the client went away, or its deadline
// passed. So a request cut off by http.TimeoutHandler keeps none of its
// changes, with either placement. Outside, TimeoutHandler(m.Middleware(h)),
// the handler's request context is the timed-out one. Inside,
// m.Middleware(http.TimeoutHandler(h, ...)), the deadline is that of the
// context the handler reached the session through (FromContext, RotateKey,
// FreezeSession, Token), the 503 goes out without a cookie, and a change the
// still-running handler makes afterwards returns ErrAlreadySaved.
//
// A request may carry several cookies of the session's name: browsers send
// every one whose Domain and Path match, a sibling host's included (cookie
// tossing, unless the name has the "__Host-" prefix). One that does not
// verify with Config.HashKeys counts for nothing. The others count whatever
// their order: when they carry more than 3 different session keys, the
// request has no session and none is read, so a request costs at most 3
// reads; otherwise every key is read, and the request has no session when
// two are of different live sessions, else the one live session among them
// (keys of dead sessions beside it are ignored). An ambiguous request is
// counted in Stats.Ambiguous and logged as a warning.
//
// The middleware may wrap a handler that it wraps already, as when it is
// applied to a whole router and again to a group of its routes, or twice by
// two libraries: a request whose context carries the session m's
// middleware added passes through the inner one untouched, to the same
// session. The outer middleware alone loads it, saves it (when the response
// starts, as above) and sets its cookie, so the request has one session,
// one Set-Cookie per cookie name and at most one stored row, and the
// handler works as under a single middleware.
//
// Middlewares of several Managers may be nested, each with its own cookie:
// every session is loaded and saved independently, the innermost is the one
// FromContext returns, and Manager.FromContext returns each Manager's. A
// request whose context already carries a session of a Manager with a
// cookie name (or IndicatorName) that m uses too, or a session of m from
// Manager.Load, is answered by the ErrorHandler with an error wrapping
// ErrInvalidConfig: the two would overwrite each other's cookie. The first
// request through a misconfigured chain shows it.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch own, err := m.checkChain(r.Context()); {
		case err != nil:
			m.fail(w, r, err)
			return
		case own != nil:
			// This Manager's middleware serves the request already: its
			// session is the one, saved with the outer response.
			next.ServeHTTP(w, r)
			return
		}
		var (
			buf    [maxCookieKeys + 1]credential
			signed [maxCookieKeys + 1]string
		)
		keys, bearer := m.keysFromRequest(r, buf[:0], &signed)
		// One allocation for the writer, the session it saves and more
		// (see responseWriter).
		sw := &responseWriter{ResponseWriter: w, m: m}
		s := &sw.session
		s.ev.Bearer = bearer
		if err := m.load(r.Context(), s, keys, r.URL.Path); err != nil {
			m.observe(r.Context(), s, err)
			m.fail(w, r, err)
			return
		}
		for i, k := range keys {
			if s.key != nil && bytes.Equal(k.key, s.key) {
				s.signed = signed[i]
			}
		}
		s.bearer, s.hook, s.req = bearer, true, r
		r = r.WithContext(attach(&sw.ctx, r.Context(), s))
		m.vary(w.Header(), &sw.vary)
		sw.s, sw.r = s, r
		next.ServeHTTP(sw, r)
		sw.commit()
	})
}

// load reads into s the session stored under one of keys: those a request
// carries (see keysFromRequest) or the one of a token given to Load. No key,
// or an unknown or expired one, yields an empty session; only a backend
// failure is an error.
//
// Every key is loaded, and the request is ambiguous, with no session, when
// two of them are of different live sessions (cookie tossing) or when there
// are more than maxCookieKeys of them, which are not loaded at all: a
// session is served only if no other live session's key came with it,
// whatever the cookies' order, and a request costs at most maxCookieKeys
// reads. path, if any, is logged with an ambiguous request.
func (m *Manager) load(ctx context.Context, s *Session, keys []credential, path string) error {
	// One clock reading per request, at PostgreSQL's microsecond precision,
	// so expiry is judged identically at load and save and by every backend.
	s.m, s.now = m, m.cfg.Now().Truncate(time.Microsecond)
	if len(keys) > maxCookieKeys {
		// More keys than are checked: one beyond the cap could be of
		// another live session (a sibling host can toss in signed cookies
		// of its own dead sessions to push the victim's out of reach), so
		// serving any could act as the wrong user.
		m.stats.ambiguous.Add(1)
		m.cfg.Logger.WarnContext(ctx, "pgsession: request carries cookies of more session keys than are checked (cookie tossing?); treated as having no session",
			"path", path, "max", maxCookieKeys)
		s.ev.Found = backend.FoundAmbiguous
		return nil
	}
	var (
		live      *backend.Record
		liveStale staleness
		dead      int // keys that name no session
	)
	for _, key := range keys {
		rec, err := m.cfg.Backend.Load(ctx, key.id, key.sid)
		var stale staleness
		if err == nil {
			switch stale = m.p.staleness(rec, s.now); stale {
			case staleDead:
				err = backend.ErrNotFound
			case staleServed, staleRefused:
				m.stats.stale.Add(1) // a request in flight across a rotation
			}
		}
		switch {
		case errors.Is(err, backend.ErrNotFound):
			m.stats.misses.Add(1)
			dead++
			s.ev.Found = max(s.ev.Found, backend.FoundUnknown)
			continue
		case err != nil:
			return fmt.Errorf("pgsession: load session: %w", err)
		case stale == rowExpired:
			// Treated as absent: the handler starts from an empty session,
			// and (for a lone key) the save removes the dead row.
			m.stats.misses.Add(1)
			if len(keys) == 1 {
				s.loaded = rec
			}
			s.ev.Found = backend.FoundExpired
			continue
		case live != nil && rec.SessionID == live.SessionID:
			// Two keys of one session, its current one and the one a
			// rotation just retired: the session, by its current key.
			if live.Predecessor {
				live, liveStale, s.key, s.loaded = rec, stale, key.key, rec
			}
			continue
		case live != nil:
			// Cookies for two live sessions: one may have been tossed in by
			// another host under the same parent domain. Serving either
			// could act as the wrong user, so the request has none.
			m.stats.ambiguous.Add(1)
			m.cfg.Logger.WarnContext(ctx, "pgsession: request carries cookies of two different live sessions (cookie tossing?); treated as having no session",
				"path", path)
			s.key, s.sid, s.loaded = nil, SessionID{}, nil
			s.ev.Found = backend.FoundAmbiguous
			return nil
		}
		live, liveStale, s.key, s.sid, s.loaded = rec, stale, key.key, rec.SessionID, rec
	}
	if live == nil {
		// Every key named nothing: the response expires the cookie (see
		// policy.decide), so the client stops sending it.
		s.dead = dead > 0 && dead == len(keys)
		return nil
	}
	m.stats.loads.Add(1)
	switch liveStale {
	case staleRefused:
		s.ev.Found = backend.FoundRetired
		return nil // the key was retired by a login or logout: it reads nothing
	case staleServed:
		s.ev.Found = backend.FoundRenewed
	default:
		s.ev.Found = backend.FoundLive
	}
	s.data, s.size = live.Data, -1 // counted when first needed (see Session.dataSize)
	return nil
}

// maxCookieKeys bounds the distinct session keys loaded for one request's
// cookies, and so the loads a request can cost: a request whose cookies
// verify to more keys is ambiguous, and none is loaded (see load).
const maxCookieKeys = 3

// keysFromRequest returns the credentials the request carries, as far as
// Config.Carrier lets it: that of a valid bearer token, else those of the
// session cookies that verify, distinct by key, in the order sent, appended
// to keys (a caller's buffer of maxCookieKeys+1). Collecting stops at
// maxCookieKeys+1 keys: that many are already too many to load, so the
// request is ambiguous (see load). signed[i] is set to the cookie value that
// carried keys[i] when it is current (see signer.decodeCurrent). Nothing
// here touches the database, so a forged value costs no query, and counts
// for nothing.
func (m *Manager) keysFromRequest(r *http.Request, keys []credential, signed *[maxCookieKeys + 1]string) (_ []credential, bearer bool) {
	if m.cfg.Carrier.bearer() {
		if token, found := bearerToken(r); found {
			if key, ok := m.signer.decode(token); ok {
				return append(keys, key), true
			}
		}
	}
	if !m.cfg.Carrier.cookies() {
		return nil, false
	}
	lines := r.Header["Cookie"]
	if !cookiesWithinLimit(lines) {
		return keys, false
	}
	for _, line := range lines {
		for value, rest, ok := nextCookie(line, m.signer.name); ok; value, rest, ok = nextCookie(rest, m.signer.name) {
			key, current, verified := m.signer.decodeCurrent(value)
			if !verified || slices.ContainsFunc(keys, func(k credential) bool { return bytes.Equal(k.key, key.key) }) {
				continue
			}
			if current {
				signed[len(keys)] = value
			}
			if keys = append(keys, key); len(keys) > maxCookieKeys {
				return keys, false
			}
		}
	}
	return keys, false
}

// save executes the policy's decision for s and adds the cookies to h (nil
// for Manager.Save, which has no response). It returns ErrAlreadySaved if s
// was saved before, and an endedError, having saved nothing, if the request
// or job of ctx has ended. The Backend's Observer, if any, sees the outcome.
func (m *Manager) save(ctx context.Context, s *Session, h http.Header) error {
	c, ok := s.seal()
	if !ok {
		return ErrAlreadySaved
	}
	s.ev.Frozen = c.freeze
	err := m.saveSealed(ctx, s, c, h)
	m.observe(ctx, s, err)
	return err
}

// observe reports what the request did to the Backend's Observer, if any.
func (m *Manager) observe(ctx context.Context, s *Session, err error) {
	if m.observer != nil {
		s.ev.Err, s.ev.Refused = err, errors.Is(err, ErrStaleKey)
		m.observer.Observe(ctx, s.ev)
	}
}

// saveSealed is save for the change c, sealed.
func (m *Manager) saveSealed(ctx context.Context, s *Session, c change, h http.Header) error {
	if err := m.discardEnded(ctx, s, c); err != nil {
		return err
	}
	d := m.p.decide(s.loaded, c, s.now)
	if d.refuse {
		return errRefused
	}
	key, sid, signed := s.key, s.sid, s.signed
	if d.action.Op == backend.OpInsert || d.action.Op == backend.OpRotate {
		key, signed = s.chooseNewKey(), ""
		d.action.New = idOf(key)
		if m.cfg.Device != nil && s.req != nil {
			dev := cleanDevice(m.cfg.Device(s.req))
			d.action.Device = &dev
		}
	}
	if d.action.Op == backend.OpInsert {
		s.mu.Lock()
		d.action.SessionID = s.sessionIDLocked()
		s.mu.Unlock()
		sid = d.action.SessionID
	}
	err := m.apply(ctx, d.action)
	switch {
	case errors.Is(err, backend.ErrGone):
		m.stats.gone.Add(1)
		if d, err = m.afterGone(ctx, s, c); err == nil {
			key, signed = s.key, s.signed // it followed a renewal, keeping its key
		}
	case err != nil:
		err = fmt.Errorf("pgsession: save session (%s): %w", d.action.Op, err)
	}
	switch {
	case errors.Is(err, backend.ErrGone):
		// A concurrent logout or rotation deleted this session or moved it
		// to a key this request may not follow, and the request changed
		// no data: its key stays dead, and that other response decides the
		// cookie.
		s.setKey(nil, SessionID{})
		return nil
	case err != nil:
		return err
	case d.action.Op == backend.OpNone && s.key != nil && !c.freeze:
		m.stats.skipped.Add(1)
		s.ev.Skipped = true
	}
	s.ev.Op, s.ev.Renewal = d.action.Op, d.action.Renewal
	if !c.freeze {
		if d.cookie == cookieExpire {
			key, sid = nil, SessionID{}
		}
		s.setKey(key, sid)
	}
	if h == nil || s.bearer || !m.cfg.Carrier.cookies() {
		return nil // the client keeps its token itself; it gets a new one through Token or Save
	}
	m.setCookies(h, d, sid, key, signed, s.now)
	if d.cookie == cookieSet && s.req != nil {
		m.warnInsecureTransport(s.req)
	}
	return nil
}

// afterGone decides again for a save whose update or rotation found its
// row gone: deleted (a logout, "log out everywhere", expiry) or moved to a
// new key by a concurrent rotation. A request that changed no data loses
// nothing, and returns backend.ErrGone. One that did follows a renewal it
// may still follow, as a request with the predecessor key would (its
// change written to the session's current row, no cookie); otherwise its
// change cannot be stored, and it fails with ErrStaleKey rather than be
// acknowledged.
func (m *Manager) afterGone(ctx context.Context, s *Session, c change) (decision, error) {
	if c.patch.IsEmpty() && c.lifetime == nil {
		return decision{}, backend.ErrGone
	}
	rec, err := m.cfg.Backend.Load(ctx, idOf(s.key), s.sid)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return decision{}, errRefused
	case err != nil:
		return decision{}, fmt.Errorf("pgsession: save session: reload after a concurrent change: %w", err)
	case m.p.staleness(rec, s.now) != staleServed:
		return decision{}, errRefused
	}
	// The data as this request's change leaves the stored one, so that
	// RotateWhen and the empty-session rule see this request's change only.
	c.data = c.patch.Apply(rec.Data)
	d := m.p.decide(rec, c, s.now)
	if d.refuse {
		return d, errRefused
	}
	switch err := m.apply(ctx, d.action); {
	case errors.Is(err, backend.ErrGone):
		return decision{}, errRefused // moved again: this key is older than the immediate predecessor now
	case err != nil:
		return d, fmt.Errorf("pgsession: save session (%s): %w", d.action.Op, err)
	}
	return d, nil
}

// errRefused is the error of a save whose change cannot be stored.
var errRefused = fmt.Errorf("pgsession: save session: %w", ErrStaleKey)

// apply executes a through the backend, counting what it did.
func (m *Manager) apply(ctx context.Context, a backend.Action) error {
	if a.Op == backend.OpNone {
		return nil
	}
	if err := m.cfg.Backend.Apply(ctx, a); err != nil {
		return err
	}
	m.stats.count(a.Op)
	return nil
}

// setCookies adds the Set-Cookie headers d asks for (the session cookie,
// and the indicator cookie if configured), and makes the response
// uncacheable by shared caches. The session cookie's value is the token of
// sid and key: the request's own value for key when it is current (see
// signer.decodeCurrent), else signed anew (so a token of the old form moves
// to the new one at the session's next write).
func (m *Manager) setCookies(h http.Header, d decision, sid SessionID, key []byte, signed string, now time.Time) {
	cc := m.cfg.Cookie
	// The header names are in canonical form: the map is used directly, as
	// h.Add and h.Set would after canonicalizing them.
	add := func(v string) { h["Set-Cookie"] = append(h["Set-Cookie"], v) }
	switch d.cookie {
	case cookieKeep:
		return
	case cookieSet:
		v := signed
		if v == "" {
			v = m.signer.encode(sid, key, d.action.New) // New: zero unless key is new
		}
		add(cc.sessionHeader(v, d.expires, now))
		if cc.IndicatorName != "" {
			add(cc.indicator(d.expires, now).String())
		}
	case cookieExpire:
		add(cc.expired(cc.Name).String())
		if cc.IndicatorName != "" {
			add(cc.expired(cc.IndicatorName).String())
		}
	}
	h["Cache-Control"] = []string{privateCacheControl(h["Cache-Control"])}
}

// fail logs err and lets the ErrorHandler answer instead of the handler.
func (m *Manager) fail(w http.ResponseWriter, r *http.Request, err error) {
	m.stats.errors.Add(1)
	m.cfg.Logger.ErrorContext(r.Context(), "pgsession: request failed", "err", err, "method", r.Method, "path", r.URL.Path)
	m.cfg.ErrorHandler(w, r, err)
}

// responseWriter saves the session when the response starts. It forwards
// everything else untouched and exposes the original writer through Unwrap,
// so http.ResponseController reaches deadlines and full-duplex settings.
type responseWriter struct {
	http.ResponseWriter
	m *Manager
	s *Session // &session
	r *http.Request

	// Allocated with the writer, to save allocations per request: the
	// session, the request's context carrying it, and the Vary values.
	session Session
	ctx     sessionContext
	vary    [2]string

	committed bool
	failed    error // set when the save failed; the response was replaced
}

// commit saves the session once, before the first byte of the response. On
// failure it writes the ErrorHandler's response instead and reports false.
func (w *responseWriter) commit() bool {
	if w.committed {
		return w.failed == nil
	}
	w.committed = true
	err := w.m.save(w.r.Context(), w.s, w.ResponseWriter.Header())
	if err == nil || errors.As(err, new(endedError)) { // an ended request saves nothing and has no one to tell
		return true
	}
	w.failed = err
	clear(w.ResponseWriter.Header()) // the handler's headers belong to the discarded response
	w.m.fail(w.ResponseWriter, w.r, err)
	return false
}

// errDiscarded is returned by Write after a failed save replaced the response.
func (w *responseWriter) errDiscarded() error {
	return fmt.Errorf("pgsession: response discarded after failed session save: %w", w.failed)
}

// WriteHeader saves the session, then sends the header.
func (w *responseWriter) WriteHeader(code int) {
	// Informational responses (103 Early Hints) precede the real header.
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.commit() {
		w.ResponseWriter.WriteHeader(code)
	}
}

// Write saves the session before the first byte, then writes.
func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.commit() {
		return 0, w.errDiscarded()
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's sendfile fast path.
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.commit() {
		return 0, w.errDiscarded()
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

// writerOnly hides ReadFrom so io.Copy cannot recurse.
type writerOnly struct{ io.Writer }

// Flush saves the session (so streamed responses carry the cookie) and
// flushes.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController, reporting failures.
func (w *responseWriter) FlushError() error {
	if !w.commit() {
		return w.errDiscarded()
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack saves the session and hands over the connection. Cookies set by the
// save cannot reach the client (the caller writes its own response), so set
// up the session in an earlier request when a hijacked one needs it.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.commit() {
		return nil, nil, w.errDiscarded()
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
