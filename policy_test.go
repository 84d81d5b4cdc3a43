package pgsession

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// TestDecide is the whole session policy as a table: (loaded record, the
// request's change, now, timeouts) → (action, cookie, refusal). No database.
func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	def := policy{idle: 8 * time.Hour, absolute: 30 * day, resolution: 10 * time.Minute}
	id, sid := backend.ID{1}, SessionID{2}
	rec := func(created, accessed time.Duration) *backend.Record {
		return &backend.Record{ID: id, SessionID: sid, Data: map[string]json.RawMessage{"a": json.RawMessage(`1`)},
			Created: t0.Add(-created), Accessed: t0.Add(-accessed)}
	}
	set := backend.Patch{Set: map[string]json.RawMessage{"b": json.RawMessage(`2`)}}
	del := backend.Patch{Delete: []string{"a"}}
	full := backend.Patch{Replace: true, Set: map[string]json.RawMessage{"b": json.RawMessage(`2`)}}
	justB := full.Set                                                                         // data of a new session
	aAndB := map[string]json.RawMessage{"a": json.RawMessage(`1`), "b": json.RawMessage(`2`)} // loaded + set
	justA := map[string]json.RawMessage{"a": json.RawMessage(`1`)}                            // loaded, unchanged
	user := func(v string) map[string]json.RawMessage {
		return map[string]json.RawMessage{"a": json.RawMessage(`1`), "user_id": json.RawMessage(v)}
	}
	adaAndB := user(`"ada"`) // a signed-in session's data + set
	adaAndB["b"] = json.RawMessage(`2`)
	withUser := func(v string) *backend.Record {
		r := rec(time.Hour, time.Minute)
		r.Data = user(v)
		return r
	}
	setUser := func(v string) backend.Patch {
		return backend.Patch{Set: map[string]json.RawMessage{"user_id": json.RawMessage(v)}}
	}
	principal := policy{idle: def.idle, absolute: def.absolute, resolution: def.resolution, principalKey: "user_id"}
	createdNow := backend.Action{Op: backend.OpInsert, Patch: full, Created: t0, Accessed: t0}
	// The cookie of a session created now: its creation plus Config's
	// absolute timeout (not the idle timeout's earlier end).
	newCookie := t0.Add(30 * day)
	// Own lifetimes, resolved as stored: 30 days idle remembered, 1m idle
	// for an admin (resolution 7.5s), 1h idle not persistent, 30 days idle
	// remembered with no absolute timeout (a sliding cookie).
	month := &Lifetime{IdleTimeout: 30 * day, AbsoluteTimeout: 90 * day, Persistent: true}
	minute := &Lifetime{IdleTimeout: time.Minute, AbsoluteTimeout: time.Hour}
	hour := &Lifetime{IdleTimeout: time.Hour, AbsoluteTimeout: 30 * day}
	sliding := &Lifetime{IdleTimeout: 30 * day, AbsoluteTimeout: -1, Persistent: true}
	own := func(l *Lifetime, created, accessed time.Duration) *backend.Record {
		r := rec(created, accessed)
		r.Lifetime = l
		return r
	}
	sessionOnly := def
	sessionOnly.sessionOnly = true
	// Rotation grace and renewal.
	graced := principal
	graced.grace = time.Minute
	renewing := graced
	renewing.renewAfter = time.Hour
	// pred is ada's session loaded by the key that its rotation, rotated
	// ago, retired: a renewal (which keeps the creation time) or a login.
	pred := func(rotated time.Duration, renewal bool) *backend.Record {
		r := withUser(`"ada"`)
		r.Predecessor, r.Renewal, r.Rotated, r.Accessed = true, renewal, t0.Add(-rotated), t0.Add(-rotated)
		if !renewal {
			r.Created = r.Rotated // a login restarts the creation time
		}
		return r
	}
	// rotatedAt is ada's current row, created created ago and rotated
	// rotated ago (not loaded by a predecessor).
	rotatedAt := func(created, rotated time.Duration) *backend.Record {
		r := withUser(`"ada"`)
		r.Created, r.Rotated, r.Accessed = t0.Add(-created), t0.Add(-rotated), t0.Add(-time.Minute)
		return r
	}
	// A fresh insert under the principal policy sets the (empty) principal.
	createdNowNoPrincipal := createdNow
	createdNowNoPrincipal.SetPrincipal = true

	tests := []struct {
		name    string
		t       policy
		loaded  *backend.Record
		c       change
		want    backend.Action
		cookie  cookieOp
		expires time.Time
		refuse  bool
	}{
		// No session loaded.
		{name: "anonymous untouched: nothing", t: def, c: change{}},
		{name: "anonymous rotate with nothing stored: nothing", t: def, c: change{rotate: true}},
		{name: "anonymous sets data: insert, new cookie", t: def, c: change{patch: set, data: justB},
			want: createdNow, cookie: cookieSet, expires: newCookie},
		{name: "anonymous sets and rotates: one insert", t: def, c: change{patch: set, data: justB, rotate: true},
			want: createdNow, cookie: cookieSet, expires: newCookie},
		{name: "freeze wins over a new session", t: def, c: change{patch: set, data: justB, freeze: true}},

		// A key that names nothing (dead): its cookie is expired, unless a
		// new session replaces it.
		{name: "dead key, nothing set: expire cookie", t: def, c: change{dead: true}, cookie: cookieExpire},
		{name: "dead key, RotateKey alone: expire cookie", t: def, c: change{dead: true, rotate: true}, cookie: cookieExpire},
		{name: "dead key, data set: insert as for no session", t: def, c: change{patch: set, data: justB, dead: true},
			want: createdNow, cookie: cookieSet, expires: newCookie},
		{name: "freeze keeps a dead key's cookie", t: def, c: change{dead: true, freeze: true}},

		// Live session. An update sends the cookie again only when it must
		// change: a sliding expiry moved, a new lifetime, a cookie to re-sign.
		{name: "unchanged within resolution: no write, no cookie", t: def, loaded: rec(time.Hour, 9*time.Minute),
			c: change{data: justA}},
		{name: "unchanged at resolution: touch, cookie kept", t: def, loaded: rec(time.Hour, 10*time.Minute),
			c:    change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieKeep},
		{name: "resolution disabled: every request touches, sliding cookie sent (no absolute timeout)",
			t: policy{idle: time.Hour, resolution: -1}, loaded: rec(time.Hour, time.Second), c: change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "browser-session cookie never slides", t: policy{idle: time.Hour, resolution: -1, sessionOnly: true},
			loaded: rec(time.Hour, time.Second), c: change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieKeep},
		{name: "idle disabled: unchanged never touches", t: policy{absolute: time.Hour * 24, resolution: time.Minute},
			loaded: rec(time.Hour, 5*time.Hour), c: change{data: justA}},
		{name: "changed within resolution: update data, access time unchanged, cookie kept", t: def, loaded: rec(time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "changed past resolution: update data and access time, cookie kept", t: def, loaded: rec(time.Hour, 20*time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set, Accessed: t0}, cookie: cookieKeep},
		{name: "changed near the absolute timeout: update, cookie kept", t: def, loaded: rec(30*day-time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "cookie to re-sign, unchanged: nothing (re-signed at the next write)", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{data: justA, resign: true}},
		{name: "cookie to re-sign, data changed: same key sent, expiry at creation + absolute", t: def,
			loaded: rec(30*day-time.Hour, time.Minute), c: change{patch: set, data: aAndB, resign: true},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "no timeouts: update, cookie kept", t: policy{resolution: -1}, loaded: rec(time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "no timeouts, cookie to re-sign: browser-session cookie", t: policy{resolution: -1}, loaded: rec(time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB, resign: true},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieSet},
		{name: "deleted last key: delete row, expire cookie", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: del}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "cleared and rotated (logout): delete", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: backend.Patch{Replace: true}, rotate: true}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "rotate (login): data moves, creation restarts", t: def, loaded: rec(20*day, time.Minute),
			c:      change{patch: set, data: aAndB, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: set, Created: t0, Accessed: t0, Renewal: false},
			cookie: cookieSet, expires: newCookie},
		{name: "rotate unchanged within resolution still rotates", t: def, loaded: rec(time.Hour, time.Second),
			c:      change{data: justA, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0, Accessed: t0, Renewal: false},
			cookie: cookieSet, expires: newCookie},
		{name: "freeze wins over rotate and clear", t: def, loaded: rec(time.Hour, time.Hour),
			c: change{patch: backend.Patch{Replace: true}, rotate: true, freeze: true}},

		// Expired session: treated as absent, its row removed.
		{name: "idle-expired untouched: delete dead row, expire cookie", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "absolute-expired untouched: delete dead row", t: def, loaded: rec(30*day, time.Minute),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "expired then set: fresh key replaces dead row", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c:    change{patch: backend.Patch{Set: full.Set, Delete: []string{"x"}}, data: justB, rotate: true},
			want: backend.Action{Op: backend.OpInsert, Old: id, Patch: full, Created: t0, Accessed: t0}, cookie: cookieSet, expires: newCookie},
		{name: "just before idle expiry: live, touched", t: def, loaded: rec(9*time.Hour, 8*time.Hour-time.Microsecond),
			c: change{data: justA}, want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieKeep},
		{name: "expiry disabled: old session live", t: policy{idle: -1, absolute: -1, resolution: -1},
			loaded: rec(400*day, 300*day), c: change{data: justA}},

		// Principal and rotation triggers.
		{name: "principal set on a new session", t: principal, c: change{patch: setUser(`42`), data: map[string]json.RawMessage{"user_id": json.RawMessage(`42`)}},
			want: backend.Action{Op: backend.OpInsert, Patch: backend.Patch{Replace: true, Set: map[string]json.RawMessage{"user_id": json.RawMessage(`42`)}},
				Created: t0, Accessed: t0, SetPrincipal: true, Principal: "42"},
			cookie: cookieSet, expires: newCookie},
		{name: "login without RotateKey rotates (principal appears): not a renewal", t: principal, loaded: rec(time.Hour, time.Minute),
			c:      change{patch: setUser(`"ada"`), data: user(`"ada"`)},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: setUser(`"ada"`), Created: t0, Accessed: t0, SetPrincipal: true, Principal: "ada", Renewal: false},
			cookie: cookieSet, expires: newCookie},
		{name: "principal changes: rotate, not a renewal", t: principal, loaded: withUser(`"ada"`),
			c:      change{patch: setUser(`"bob"`), data: user(`"bob"`)},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: setUser(`"bob"`), Created: t0, Accessed: t0, SetPrincipal: true, Principal: "bob", Renewal: false},
			cookie: cookieSet, expires: newCookie},
		{name: "RotateKey keeping the principal: a renewal", t: principal, loaded: withUser(`"ada"`),
			c:      change{data: user(`"ada"`), rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0, Accessed: t0, Renewal: true},
			cookie: cookieSet, expires: newCookie},
		{name: "principal re-set to an equal value (42.0 = 42): update, no rotation", t: principal, loaded: withUser(`42`),
			c:    change{patch: setUser(`42.0`), data: user(`42.0`)},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: setUser(`42.0`), SetPrincipal: true, Principal: "42"}, cookie: cookieKeep},
		{name: "other keys change: principal untouched", t: principal, loaded: withUser(`"ada"`),
			c:    change{patch: set, data: adaAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "principal key deleted (logout without RotateKey): rotate and clear principal, not a renewal", t: principal, loaded: withUser(`"ada"`),
			c:      change{patch: backend.Patch{Delete: []string{"user_id"}}, data: justA},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: backend.Patch{Delete: []string{"user_id"}}, Created: t0, Accessed: t0, SetPrincipal: true, Renewal: false},
			cookie: cookieSet, expires: newCookie},
		{name: "RotateWhen says yes: rotate; no absolute timeout, so the cookie expires at access + idle",
			t: policy{idle: def.idle, resolution: def.resolution, rotateWhen: func(old, new map[string]json.RawMessage) bool {
				return string(old["a"]) != string(new["a"])
			}}, loaded: rec(time.Hour, time.Minute),
			c:      change{patch: backend.Patch{Set: map[string]json.RawMessage{"a": json.RawMessage(`2`)}}, data: map[string]json.RawMessage{"a": json.RawMessage(`2`)}},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: backend.Patch{Set: map[string]json.RawMessage{"a": json.RawMessage(`2`)}}, Created: t0, Accessed: t0, Renewal: false},
			cookie: cookieSet, expires: t0.Add(8 * time.Hour)},
		{name: "freeze on expired: nothing", t: def, loaded: rec(9*time.Hour, 8*time.Hour), c: change{freeze: true}},

		// Renewal (RenewAfter): a signed-in session's key is replaced once
		// it is old enough; the absolute timeout runs on.
		{name: "renewal due: rotate, creation kept", t: renewing, loaded: withUser(`"ada"`),
			c:      change{data: user(`"ada"`), renewable: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0.Add(-time.Hour), Accessed: t0, Renewal: true},
			cookie: cookieSet, expires: t0.Add(-time.Hour + 30*day)},
		{name: "renewal due with a data change: the rotation carries it", t: renewing, loaded: withUser(`"ada"`),
			c:      change{patch: set, data: adaAndB, renewable: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: set, Created: t0.Add(-time.Hour), Accessed: t0, Renewal: true},
			cookie: cookieSet, expires: t0.Add(-time.Hour + 30*day)},
		{name: "renewal due, key age counted from the last rotation", t: renewing, loaded: rotatedAt(3*time.Hour, time.Hour),
			c:      change{data: user(`"ada"`), renewable: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0.Add(-3 * time.Hour), Accessed: t0, Renewal: true},
			cookie: cookieSet, expires: t0.Add(-3*time.Hour + 30*day)},
		{name: "no renewal: key rotated less than RenewAfter ago", t: renewing, loaded: rotatedAt(3*time.Hour, 30*time.Minute),
			c: change{data: user(`"ada"`), renewable: true}},
		{name: "no renewal: key younger than RenewAfter", t: renewing, loaded: func() *backend.Record { r := withUser(`"ada"`); r.Created = t0.Add(-59 * time.Minute); return r }(),
			c: change{data: user(`"ada"`), renewable: true}},
		{name: "no renewal: the new key would not reach the client", t: renewing, loaded: withUser(`"ada"`),
			c: change{data: user(`"ada"`)}},
		{name: "no renewal: anonymous session", t: renewing, loaded: rec(time.Hour, time.Minute),
			c: change{data: justA, renewable: true}},

		// A record loaded by its predecessor key (a request in flight when
		// another rotated the key), within the grace window.
		{name: "renewal's predecessor, unchanged: nothing", t: graced, loaded: pred(30*time.Second, true),
			c: change{data: user(`"ada"`)}},
		{name: "renewal's predecessor, data set: current row updated, cookie kept", t: graced, loaded: pred(30*time.Second, true),
			c:    change{patch: set, data: adaAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "renewal's predecessor, new lifetime: written, cookie not sent", t: graced, loaded: pred(30*time.Second, true),
			c:    change{data: user(`"ada"`), lifetime: hour},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Lifetime: hour, Expires: t0.Add(time.Hour - 30*time.Second)}, cookie: cookieKeep},
		{name: "renewal's predecessor, cookie to re-sign: not sent", t: graced, loaded: pred(30*time.Second, true),
			c:    change{patch: set, data: adaAndB, resign: true},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieKeep},
		{name: "renewal's predecessor, RotateKey: refused", t: graced, loaded: pred(30*time.Second, true),
			c: change{data: user(`"ada"`), rotate: true}, refuse: true},
		{name: "renewal's predecessor, principal changes: refused", t: graced, loaded: pred(30*time.Second, true),
			c: change{patch: setUser(`"bob"`), data: user(`"bob"`)}, refuse: true},
		{name: "renewal's predecessor, cleared: delete, expire cookie", t: graced, loaded: pred(30*time.Second, true),
			c: change{patch: backend.Patch{Replace: true}}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "renewal's predecessor is not renewed itself", t: policy{idle: def.idle, absolute: def.absolute, resolution: def.resolution,
			principalKey: "user_id", grace: time.Minute, renewAfter: 10 * time.Second}, loaded: pred(30*time.Second, true),
			c: change{data: user(`"ada"`), renewable: true}},
		{name: "login's predecessor, nothing set: nothing", t: graced, loaded: pred(30*time.Second, false), c: change{}},
		{name: "login's predecessor, RotateKey alone: nothing", t: graced, loaded: pred(30*time.Second, false), c: change{rotate: true}},
		{name: "login's predecessor, data set: refused", t: graced, loaded: pred(30*time.Second, false),
			c: change{patch: set, data: justB}, refuse: true},
		{name: "login's predecessor, new lifetime alone: refused", t: graced, loaded: pred(30*time.Second, false),
			c: change{lifetime: hour}, refuse: true},

		// A predecessor not recognised: a dead key.
		{name: "predecessor at the end of the grace window: dead key, expire cookie", t: graced, loaded: pred(time.Minute, true),
			c: change{}, cookie: cookieExpire},
		{name: "login's predecessor past the grace window, data set: fresh insert, current row untouched", t: graced,
			loaded: pred(2*time.Minute, false), c: change{patch: set, data: justB},
			want: createdNowNoPrincipal, cookie: cookieSet, expires: newCookie},
		{name: "predecessor with the grace window disabled: dead key", t: principal, loaded: pred(time.Second, true),
			c: change{}, cookie: cookieExpire},
		{name: "predecessor rotated before its row's creation (rolling upgrade): dead key", t: graced,
			loaded: func() *backend.Record {
				r := pred(30*time.Second, true)
				r.Created = t0.Add(-10 * time.Second)
				return r
			}(),
			c:    change{patch: set, data: justB},
			want: createdNowNoPrincipal, cookie: cookieSet, expires: newCookie},

		// Own lifetimes (SetLifetime).
		{name: "SessionOnly: cookie without expiry", t: sessionOnly, c: change{patch: set, data: justB},
			want: createdNow, cookie: cookieSet},
		{name: "remember me on a new session: stored, persistent cookie (creation + own absolute) despite SessionOnly", t: sessionOnly,
			c:      change{patch: set, data: justB, lifetime: month},
			want:   backend.Action{Op: backend.OpInsert, Patch: full, Created: t0, Accessed: t0, Lifetime: month, Expires: t0.Add(30 * day)},
			cookie: cookieSet, expires: t0.Add(90 * day)},
		{name: "own lifetime outlives Config's idle timeout: touched, cookie kept", t: def, loaded: own(month, 10*day, 9*time.Hour),
			c:    change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0, Expires: t0.Add(30 * day)}, cookie: cookieKeep},
		{name: "own lifetime without absolute timeout: a touch slides the cookie", t: def, loaded: own(sliding, 40*day, 9*time.Hour),
			c:    change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0, Expires: t0.Add(30 * day)}, cookie: cookieSet, expires: t0.Add(30 * day)},
		{name: "own lifetime without absolute timeout, data change within resolution: cookie kept", t: def, loaded: own(sliding, 40*day, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set, Expires: t0.Add(30*day - time.Minute)}, cookie: cookieKeep},
		{name: "own short idle timeout ends the session", t: def, loaded: own(minute, 10*time.Minute, time.Minute),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "own short idle timeout: resolution an eighth of it", t: def, loaded: own(minute, 10*time.Minute, 8*time.Second),
			c:    change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0, Expires: t0.Add(time.Minute)}, cookie: cookieKeep},
		{name: "own lifetime, data change within resolution: expiry as stored", t: def, loaded: own(hour, 2*time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set, Expires: t0.Add(59 * time.Minute)}, cookie: cookieKeep},
		{name: "rotation keeps the own lifetime", t: def, loaded: own(month, 40*day, time.Hour),
			c:      change{data: justA, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0, Accessed: t0, Expires: t0.Add(30 * day), Renewal: false},
			cookie: cookieSet, expires: t0.Add(90 * day)},
		{name: "a new lifetime alone is written, cookie sent (browser-session)", t: def, loaded: rec(time.Hour, time.Minute),
			c:    change{data: justA, lifetime: hour},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Lifetime: hour, Expires: t0.Add(59 * time.Minute)}, cookie: cookieSet},
		{name: "a new persistent lifetime: cookie sent, expiry at creation + its absolute timeout", t: def, loaded: rec(time.Hour, time.Minute),
			c:      change{data: justA, lifetime: month},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Lifetime: month, Expires: t0.Add(30*day - time.Minute)},
			cookie: cookieSet, expires: t0.Add(90*day - time.Hour)},
		{name: "an expired session does not pass its lifetime to its successor", t: def, loaded: own(minute, time.Hour, time.Hour),
			c:    change{patch: set, data: justB},
			want: backend.Action{Op: backend.OpInsert, Old: id, Patch: full, Created: t0, Accessed: t0}, cookie: cookieSet, expires: newCookie},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.t.decide(tt.loaded, tt.c, t0)
			if tt.want.Old != (backend.ID{}) {
				tt.want.OldSessionID = sid // every action on the loaded row names it by both
			}
			if !reflect.DeepEqual(d.action, tt.want) {
				t.Errorf("action:\n got  %+v\n want %+v", d.action, tt.want)
			}
			if d.cookie != tt.cookie {
				t.Errorf("cookie = %v, want %v", d.cookie, tt.cookie)
			}
			if !d.expires.Equal(tt.expires) {
				t.Errorf("expires = %v, want %v", d.expires, tt.expires)
			}
			if d.refuse != tt.refuse {
				t.Errorf("refuse = %v, want %v", d.refuse, tt.refuse)
			}
		})
	}
}

func TestPrincipalText(t *testing.T) {
	for raw, want := range map[string]string{
		`"ada"`: "ada", `42`: "42", `42.0`: "42", `"42"`: "42", `-7`: "-7", `1.5`: "1.5",
		`null`: "", ``: "", `{"id": 7}`: `{"id":7}`,
		`123456789012345678901234567890`: "123456789012345678901234567890", // beyond float64: as written
	} {
		if got := principalText(json.RawMessage(raw)); got != want {
			t.Errorf("principalText(%s) = %q, want %q", raw, got, want)
		}
	}
}
