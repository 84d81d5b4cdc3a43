package pgsession

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// This file is the whole session policy: timeouts, timeout resolution,
// rotation, freeze and empty sessions. decide is a pure function, so every
// rule is covered by a table-driven test without a database
// (policy_test.go). Backends execute the Action it returns; the middleware
// only decides when to call it.

// policy is the resolved session policy of a Config. A duration <= 0
// disables that rule.
type policy struct {
	idle, absolute, resolution time.Duration
	principalKey               string // "" when sessions have no principal
	rotateWhen                 func(old, new map[string]json.RawMessage) bool
	sessionOnly                bool // cookies of sessions without a Lifetime are browser-session cookies
	// grace is how long a predecessor key is recognised (<= 0: never);
	// renewAfter the key age at which a signed-in session is renewed
	// (<= 0: never).
	grace, renewAfter time.Duration
}

// change is what a request did to its session, as seen when it is saved.
type change struct {
	patch  backend.Patch
	data   map[string]json.RawMessage // the data as the request leaves it
	rotate bool                       // RotateKey was called
	freeze bool                       // FreezeSession was called
	// lifetime is the session's new own lifetime (SetLifetime, resolved),
	// or nil to keep what it has.
	lifetime *Lifetime
	// dead says the request presented a key that names no session (never
	// adopted): unless a new session replaces it, its cookie is expired, so
	// the client stops sending it.
	dead bool
	// renewable says a new key reaches the client by itself (a cookie set
	// by the middleware's response), so the policy may renew the key on
	// its own (RenewAfter).
	renewable bool
	// resign says the request's cookie must be sent again to stay valid:
	// it is signed with an older hash key, or of the form before tokens
	// carried the session ID.
	resign bool
}

// cookieOp says what the response does with the session cookie.
type cookieOp uint8

const (
	cookieKeep   cookieOp = iota // send nothing: the client's cookie stays valid
	cookieSet                    // send the (new or same) key with expires
	cookieExpire                 // tell the client to drop its cookie
)

// decision is the outcome of the policy for one request.
type decision struct {
	action  backend.Action
	cookie  cookieOp
	expires time.Time // cookie expiry for cookieSet; zero means a browser-session cookie
	// refuse says the request's change cannot be stored (see ErrStaleKey):
	// the save writes nothing, sends no cookie, and fails.
	refuse bool
}

// staleness is what a loaded record may do, from the request's point of
// view: it is expired, or loaded by its current key, or by its predecessor
// (see backend.Record.Predecessor).
type staleness uint8

const (
	current      staleness = iota // live, loaded by its current key
	rowExpired                    // past its timeouts: treated as absent, whatever key loaded it
	staleServed                   // a renewal's predecessor, in the grace window: the session, without a new key
	staleRefused                  // a login's or logout's predecessor, in the window: no session, no change
	staleDead                     // a predecessor past the window: as a key that names nothing
)

// staleness returns what rec, as loaded at now, may do. Expiry comes
// first: an expired row is absent for every key. A predecessor is
// recognised for the grace window after its rotation, and only if that
// rotation recorded it: one before the row's creation time was replaced by
// a rotation of a version that did not record predecessors (a rolling
// upgrade), which makes it older than the immediate one.
func (t policy) staleness(rec *backend.Record, now time.Time) staleness {
	switch {
	case t.expired(rec, now):
		return rowExpired
	case !rec.Predecessor:
		return current
	case t.grace <= 0 || rec.Rotated.IsZero() || rec.Rotated.Before(rec.Created) || now.Sub(rec.Rotated) >= t.grace:
		return staleDead
	case rec.Renewal:
		return staleServed
	}
	return staleRefused
}

// resolveLifetime returns l as stored: each timeout positive, or -1 for
// none, zero fields taking Config's value.
func (t policy) resolveLifetime(l Lifetime) Lifetime {
	resolve := func(d, def time.Duration) time.Duration {
		if d == 0 {
			d = def
		}
		return max(d, -1)
	}
	l.IdleTimeout = resolve(l.IdleTimeout, t.idle)
	l.AbsoluteTimeout = resolve(l.AbsoluteTimeout, t.absolute)
	return l
}

// timeouts returns the idle and absolute timeouts of a session with the
// own lifetime own (nil: Config's). A duration <= 0 means none.
func (t policy) timeouts(own *Lifetime) (idle, absolute time.Duration) {
	if own == nil {
		return t.idle, t.absolute
	}
	return own.IdleTimeout, own.AbsoluteTimeout
}

// expired reports whether rec is past its idle or absolute timeout at now.
func (t policy) expired(rec *backend.Record, now time.Time) bool {
	idle, absolute := t.timeouts(rec.Lifetime)
	return (idle > 0 && now.Sub(rec.Accessed) >= idle) ||
		(absolute > 0 && now.Sub(rec.Created) >= absolute)
}

// expiry returns when a session with the own lifetime own, created at
// created and accessed at accessed, expires, or the zero time if no timeout
// applies.
func (t policy) expiry(own *Lifetime, created, accessed time.Time) time.Time {
	idle, absolute := t.timeouts(own)
	var at time.Time
	if idle > 0 {
		at = accessed.Add(idle)
	}
	if absolute > 0 {
		if abs := created.Add(absolute); at.IsZero() || abs.Before(at) {
			at = abs
		}
	}
	return at
}

// ownExpires is the Expires of an Action: the expiry under the session's
// own lifetime, zero without one.
func (t policy) ownExpires(own *Lifetime, created, accessed time.Time) time.Time {
	if own == nil {
		return time.Time{}
	}
	return t.expiry(own, created, accessed)
}

// cookieExpires returns the expiry to put on the cookie: the latest the
// session can end, its creation plus the absolute timeout, so that the
// cookie of a session in use never has to be sent again with the same key
// (a response that did could arrive after a concurrent rotation's and put
// the retired key back in the client's jar); with no absolute timeout, its
// access plus the idle timeout (see cookieSlides); zero for a
// browser-session cookie. A cookie that outlives its session's idle
// timeout is expired by the first request that brings it.
func (t policy) cookieExpires(own *Lifetime, created, accessed time.Time) time.Time {
	if (own == nil && t.sessionOnly) || (own != nil && !own.Persistent) {
		return time.Time{}
	}
	idle, absolute := t.timeouts(own)
	switch {
	case absolute > 0:
		return created.Add(absolute)
	case idle > 0:
		return accessed.Add(idle)
	}
	return time.Time{}
}

// cookieSlides reports whether the cookie's expiry moves with the access
// time (a persistent cookie with an idle but no absolute timeout), so that
// writing the access time sends the cookie again.
func (t policy) cookieSlides(own *Lifetime) bool {
	idle, absolute := t.timeouts(own)
	return absolute <= 0 && idle > 0 && !t.cookieExpires(own, time.Time{}, time.Time{}.Add(time.Hour)).IsZero()
}

// decide returns what to write for a request that loaded loaded (nil when
// the request had no valid session) and made the change c, at time now.
// The New ID of an insert or rotation is left zero; the caller fills it with a
// fresh random key, so decide stays pure.
//
// A record loaded by its predecessor key (a request in flight when another
// rotated the key) never gets a new key or a Set-Cookie that would replace
// the client's newer one: after a renewal it is the session (its changes
// written to the current row, a rotation refused); after a login or logout
// it holds nothing, and any change is refused; past the grace window its
// key is dead.
func (t policy) decide(loaded *backend.Record, c change, now time.Time) decision {
	if c.freeze {
		return decision{}
	}
	stale := current
	if loaded != nil {
		stale = t.staleness(loaded, now)
	}
	switch stale {
	case rowExpired:
		// An expired session is treated as absent; its row is removed on sight
		// so that no later change of configuration can revive it.
		if len(c.data) == 0 {
			return decision{action: backend.Action{Op: backend.OpDelete, Old: loaded.ID, OldSessionID: loaded.SessionID}, cookie: cookieExpire}
		}
		return t.create(loaded, c, now)
	case staleDead:
		loaded, c.dead = nil, true
	case staleRefused:
		if len(c.data) == 0 && c.lifetime == nil {
			return decision{}
		}
		return decision{refuse: true}
	}
	if loaded == nil {
		switch {
		case len(c.data) != 0:
			return t.create(nil, c, now)
		case c.dead:
			return decision{cookie: cookieExpire}
		}
		return decision{}
	}
	d := t.live(loaded, c, now, stale == current)
	if stale == staleServed {
		// The client holds a newer key already, which no response to this
		// request may replace, and a retired key may not mint another.
		if d.action.Op == backend.OpRotate {
			return decision{refuse: true}
		}
		if d.cookie == cookieSet {
			d.cookie, d.expires = cookieKeep, time.Time{}
		}
	}
	return d
}

// live decides for the live session loaded; renew allows a renewal
// (RenewAfter) of its key.
func (t policy) live(loaded *backend.Record, c change, now time.Time, renew bool) decision {
	old, sid := loaded.ID, loaded.SessionID
	own := loaded.Lifetime
	if c.lifetime != nil {
		own = c.lifetime
	}
	switch {
	case len(c.data) == 0:
		return decision{action: backend.Action{Op: backend.OpDelete, Old: old, OldSessionID: sid}, cookie: cookieExpire}
	case c.rotate || t.rotationTriggered(loaded.Data, c.data):
		// Re-authentication: the absolute timeout starts over.
		return t.rotate(loaded, c, own, now, now)
	case renew && t.renewalDue(loaded, c, now):
		// A renewal: the absolute timeout runs on.
		return t.rotate(loaded, c, own, loaded.Created, now)
	case c.patch.IsEmpty() && c.lifetime == nil && !t.touchDue(loaded, now):
		return decision{}
	}
	// A data change within the resolution leaves the access time alone too:
	// with no indexed column changed, PostgreSQL can update the row in place
	// (a HOT update) instead of adding to every index.
	// The cookie goes out again only when it must change: a new lifetime,
	// a cookie to re-sign, or an expiry that slides with the access time.
	a := backend.Action{Op: backend.OpUpdate, Old: old, OldSessionID: sid, Patch: c.patch, Lifetime: c.lifetime}
	accessed := loaded.Accessed
	cookie := cookieKeep
	if t.touchDue(loaded, now) {
		a.Accessed, accessed = now, now
		if t.cookieSlides(own) {
			cookie = cookieSet
		}
	}
	if c.lifetime != nil || c.resign {
		cookie = cookieSet
	}
	a.Expires = t.ownExpires(own, loaded.Created, accessed)
	t.setPrincipal(&a, c, false)
	d := decision{action: a, cookie: cookie}
	if cookie == cookieSet {
		d.expires = t.cookieExpires(own, loaded.Created, accessed)
	}
	return d
}

// rotate moves the session loaded to a new key, created at created. The
// rotation is a renewal, whose predecessor may still be served for the
// grace window, when it keeps who is signed in; without a PrincipalKey
// every rotation counts as a change of who is signed in.
func (t policy) rotate(loaded *backend.Record, c change, own *Lifetime, created, now time.Time) decision {
	a := backend.Action{Op: backend.OpRotate, Old: loaded.ID, OldSessionID: loaded.SessionID, Patch: c.patch, Created: created, Accessed: now,
		Lifetime: c.lifetime, Expires: t.ownExpires(own, created, now),
		Renewal: t.principalKey != "" && principalText(loaded.Data[t.principalKey]) == principalText(c.data[t.principalKey])}
	t.setPrincipal(&a, c, false)
	return decision{action: a, cookie: cookieSet, expires: t.cookieExpires(own, created, now)}
}

// renewalDue reports whether the policy renews the key of the session
// loaded by itself: RenewAfter is set, the session is signed in (its
// principal is not empty), the new key reaches the client by itself, and
// the key is at least RenewAfter old (since its creation or last rotation).
func (t policy) renewalDue(loaded *backend.Record, c change, now time.Time) bool {
	if t.renewAfter <= 0 || !c.renewable || principalText(loaded.Data[t.principalKey]) == "" {
		return false
	}
	issued := loaded.Created
	if loaded.Rotated.After(issued) {
		issued = loaded.Rotated
	}
	return now.Sub(issued) >= t.renewAfter
}

// create stores a brand-new session holding the request's data, replacing
// the dead row (if not nil). It has a lifetime of its own only if the
// request set one.
func (t policy) create(dead *backend.Record, c change, now time.Time) decision {
	a := backend.Action{Op: backend.OpInsert, Patch: backend.Patch{Replace: true, Set: c.data}, Created: now, Accessed: now,
		Lifetime: c.lifetime, Expires: t.ownExpires(c.lifetime, now, now)}
	if dead != nil {
		a.Old, a.OldSessionID = dead.ID, dead.SessionID
	}
	t.setPrincipal(&a, c, true)
	return decision{action: a, cookie: cookieSet, expires: t.cookieExpires(c.lifetime, now, now)}
}

// setPrincipal fills the principal column's new value when the request set
// it (always for a new row).
func (t policy) setPrincipal(a *backend.Action, c change, always bool) {
	if t.principalKey == "" {
		return
	}
	if always || touches(c.patch, t.principalKey) {
		a.SetPrincipal = true
		a.Principal = principalText(c.data[t.principalKey])
	}
}

// rotationTriggered reports whether the data's change calls for a new key by
// itself: the principal changed (a login without RotateKey stays safe from
// fixation), or Config.RotateWhen says so.
func (t policy) rotationTriggered(old, new map[string]json.RawMessage) bool {
	if t.principalKey != "" && principalText(old[t.principalKey]) != principalText(new[t.principalKey]) {
		return true
	}
	return t.rotateWhen != nil && t.rotateWhen(old, new)
}

// principalText is the principal column's form of a JSON value: a string
// unquoted, null or absent as "", anything else as compact JSON (so the
// number 42 and the string "42" are the same principal).
func principalText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var b bytes.Buffer
	if json.Compact(&b, v) != nil || b.String() == "null" {
		return ""
	}
	if f, err := strconv.ParseFloat(b.String(), 64); err == nil && math.Abs(f) < 1<<53 && f == math.Trunc(f) {
		return strconv.FormatInt(int64(f), 10) // 42.0 and 42 alike
	}
	return b.String()
}

// touchDue reports whether an unchanged session's stored access time must be
// moved forward: only when idle expiry is on and the stored time is at least
// the timeout resolution old. A session whose own idle timeout is short
// gets a resolution of at most an eighth of it.
func (t policy) touchDue(rec *backend.Record, now time.Time) bool {
	idle, _ := t.timeouts(rec.Lifetime)
	res := t.resolution
	if rec.Lifetime != nil && res > idle/8 {
		res = idle / 8
	}
	return idle > 0 && (res <= 0 || now.Sub(rec.Accessed) >= res)
}

// touches reports whether the patch p may change key.
func touches(p backend.Patch, key string) bool {
	if _, ok := p.Set[key]; ok || p.Replace {
		return true
	}
	for _, k := range p.Delete {
		if k == key {
			return true
		}
	}
	return false
}
