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

// cookieExpires returns the expiry to put on the cookie: the session's, or
// zero for a browser-session cookie.
func (t policy) cookieExpires(own *Lifetime, created, accessed time.Time) time.Time {
	if (own == nil && t.sessionOnly) || (own != nil && !own.Persistent) {
		return time.Time{}
	}
	return t.expiry(own, created, accessed)
}

// decide returns what to write for a request that loaded loaded (nil when
// the request had no valid session) and made the change c, at time now.
// The New ID of an insert or rotation is left zero; the caller fills it with a
// fresh random key, so decide stays pure.
func (t policy) decide(loaded *backend.Record, c change, now time.Time) decision {
	if c.freeze {
		return decision{}
	}
	if loaded != nil && t.expired(loaded, now) {
		// An expired session is treated as absent; its row is removed on sight
		// so that no later change of configuration can revive it.
		if len(c.data) == 0 {
			return decision{action: backend.Action{Op: backend.OpDelete, Old: loaded.ID, OldSessionID: loaded.SessionID}, cookie: cookieExpire}
		}
		return t.create(loaded, c, now)
	}
	if loaded == nil {
		if len(c.data) == 0 {
			return decision{}
		}
		return t.create(nil, c, now)
	}
	old, sid := loaded.ID, loaded.SessionID
	own := loaded.Lifetime
	if c.lifetime != nil {
		own = c.lifetime
	}
	switch {
	case len(c.data) == 0:
		return decision{action: backend.Action{Op: backend.OpDelete, Old: old, OldSessionID: sid}, cookie: cookieExpire}
	case c.rotate || t.rotationTriggered(loaded.Data, c.data):
		a := backend.Action{Op: backend.OpRotate, Old: old, OldSessionID: sid, Patch: c.patch, Created: now, Accessed: now,
			Lifetime: c.lifetime, Expires: t.ownExpires(own, now, now)}
		t.setPrincipal(&a, c, false)
		return decision{action: a, cookie: cookieSet, expires: t.cookieExpires(own, now, now)}
	case c.patch.IsEmpty() && c.lifetime == nil && !t.touchDue(loaded, now):
		return decision{}
	}
	// A data change within the resolution leaves the access time alone too:
	// with no indexed column changed, PostgreSQL can update the row in place
	// (a HOT update) instead of adding to every index.
	a := backend.Action{Op: backend.OpUpdate, Old: old, OldSessionID: sid, Patch: c.patch, Lifetime: c.lifetime}
	accessed := loaded.Accessed
	if t.touchDue(loaded, now) {
		a.Accessed, accessed = now, now
	}
	a.Expires = t.ownExpires(own, loaded.Created, accessed)
	t.setPrincipal(&a, c, false)
	return decision{action: a, cookie: cookieSet, expires: t.cookieExpires(own, loaded.Created, accessed)}
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
