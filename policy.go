package pgsession

import "time"

// This file is the whole session policy: timeouts, timeout resolution,
// rotation, freeze and empty sessions. decide is a pure function, so every
// rule is covered by a table-driven test without a database
// (policy_test.go). Backends execute the Action it returns; the middleware
// only decides when to call it.

// timeouts are the resolved durations of a Config. A value <= 0 disables
// that rule.
type timeouts struct {
	idle, absolute, resolution time.Duration
}

// change is what a request did to its session, as seen when it is saved.
type change struct {
	patch  Patch
	empty  bool // the session holds no keys after this request's changes
	rotate bool // RotateKey was called
	freeze bool // FreezeSession was called
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
	action  Action
	cookie  cookieOp
	expires time.Time // cookie expiry for cookieSet; zero means a browser-session cookie
}

// expired reports whether rec is past its idle or absolute timeout at now.
func (t timeouts) expired(rec *Record, now time.Time) bool {
	return (t.idle > 0 && now.Sub(rec.Accessed) >= t.idle) ||
		(t.absolute > 0 && now.Sub(rec.Created) >= t.absolute)
}

// expiry returns when a session created at created and accessed at accessed
// expires, or the zero time if no timeout applies.
func (t timeouts) expiry(created, accessed time.Time) time.Time {
	var at time.Time
	if t.idle > 0 {
		at = accessed.Add(t.idle)
	}
	if t.absolute > 0 {
		if abs := created.Add(t.absolute); at.IsZero() || abs.Before(at) {
			at = abs
		}
	}
	return at
}

// decide returns what to write for a request that loaded loaded (nil when
// the request had no valid session) and made the change c, at time now.
// The New ID of an insert or rotation is left zero; the caller fills it with a
// fresh random key, so decide stays pure.
func (t timeouts) decide(loaded *Record, c change, now time.Time) decision {
	if c.freeze {
		return decision{}
	}
	if loaded != nil && t.expired(loaded, now) {
		// An expired session is treated as absent; its row is removed on sight
		// so that no later change of configuration can revive it.
		dead := loaded.ID
		if c.empty {
			return decision{action: Action{Op: OpDelete, Old: dead}, cookie: cookieExpire}
		}
		return t.create(dead, c.patch, now)
	}
	if loaded == nil {
		if c.empty {
			return decision{}
		}
		return t.create(ID{}, c.patch, now)
	}
	old := loaded.ID
	switch {
	case c.empty:
		return decision{action: Action{Op: OpDelete, Old: old}, cookie: cookieExpire}
	case c.rotate:
		return decision{
			action:  Action{Op: OpRotate, Old: old, Patch: c.patch, Created: now, Accessed: now},
			cookie:  cookieSet,
			expires: t.expiry(now, now),
		}
	case c.patch.IsEmpty() && !t.touchDue(loaded, now):
		return decision{}
	}
	return decision{
		action:  Action{Op: OpUpdate, Old: old, Patch: c.patch, Accessed: now},
		cookie:  cookieSet,
		expires: t.expiry(loaded.Created, now),
	}
}

// create stores a brand-new session holding patch.Set, replacing the dead row
// (if any).
func (t timeouts) create(dead ID, patch Patch, now time.Time) decision {
	patch.Replace = true
	patch.Delete = nil
	return decision{
		action:  Action{Op: OpInsert, Old: dead, Patch: patch, Created: now, Accessed: now},
		cookie:  cookieSet,
		expires: t.expiry(now, now),
	}
}

// touchDue reports whether an unchanged session's stored access time must be
// moved forward: only when idle expiry is on and the stored time is at least
// the timeout resolution old.
func (t timeouts) touchDue(rec *Record, now time.Time) bool {
	return t.idle > 0 && (t.resolution <= 0 || now.Sub(rec.Accessed) >= t.resolution)
}
