package pgsession

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// TestDecide is the whole session policy as a table: (loaded record, the
// request's change, now, timeouts) → (action, cookie). No database.
func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	def := policy{idle: 8 * time.Hour, absolute: 30 * 24 * time.Hour, resolution: 10 * time.Minute}
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
	newExpiry := t0.Add(8 * time.Hour)
	// Own lifetimes, resolved as stored: 30 days idle remembered, 1m idle
	// for an admin (resolution 7.5s), 1h idle not persistent.
	month := &Lifetime{IdleTimeout: 30 * 24 * time.Hour, AbsoluteTimeout: 90 * 24 * time.Hour, Persistent: true}
	minute := &Lifetime{IdleTimeout: time.Minute, AbsoluteTimeout: time.Hour}
	hour := &Lifetime{IdleTimeout: time.Hour, AbsoluteTimeout: 30 * 24 * time.Hour}
	own := func(l *Lifetime, created, accessed time.Duration) *backend.Record {
		r := rec(created, accessed)
		r.Lifetime = l
		return r
	}
	sessionOnly := def
	sessionOnly.sessionOnly = true

	tests := []struct {
		name    string
		t       policy
		loaded  *backend.Record
		c       change
		want    backend.Action
		cookie  cookieOp
		expires time.Time
	}{
		// No session loaded.
		{name: "anonymous untouched: nothing", t: def, c: change{}},
		{name: "anonymous rotate with nothing stored: nothing", t: def, c: change{rotate: true}},
		{name: "anonymous sets data: insert, new cookie", t: def, c: change{patch: set, data: justB},
			want: createdNow, cookie: cookieSet, expires: newExpiry},
		{name: "anonymous sets and rotates: one insert", t: def, c: change{patch: set, data: justB, rotate: true},
			want: createdNow, cookie: cookieSet, expires: newExpiry},
		{name: "freeze wins over a new session", t: def, c: change{patch: set, data: justB, freeze: true}},

		// Live session.
		{name: "unchanged within resolution: no write, no cookie", t: def, loaded: rec(time.Hour, 9*time.Minute),
			c: change{data: justA}},
		{name: "unchanged at resolution: touch", t: def, loaded: rec(time.Hour, 10*time.Minute),
			c:      change{data: justA},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "resolution disabled: every request touches", t: policy{idle: time.Hour, resolution: -1},
			loaded: rec(time.Hour, time.Second), c: change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "idle disabled: unchanged never touches", t: policy{absolute: time.Hour * 24, resolution: time.Minute},
			loaded: rec(time.Hour, 5*time.Hour), c: change{data: justA}},
		{name: "changed within resolution: update data, access time unchanged", t: def, loaded: rec(time.Hour, time.Minute),
			c:      change{patch: set, data: aAndB},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Patch: set},
			cookie: cookieSet, expires: newExpiry.Add(-time.Minute)},
		{name: "changed past resolution: update data and access time", t: def, loaded: rec(time.Hour, 20*time.Minute),
			c:      change{patch: set, data: aAndB},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Patch: set, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "cookie expiry capped by absolute timeout", t: def, loaded: rec(30*24*time.Hour-time.Hour, time.Minute),
			c:      change{patch: set, data: aAndB},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Patch: set},
			cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "no timeouts: session cookie", t: policy{resolution: -1}, loaded: rec(time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieSet},
		{name: "deleted last key: delete row, expire cookie", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: del}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "cleared and rotated (logout): delete", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: backend.Patch{Replace: true}, rotate: true}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "rotate (login): data moves, creation restarts", t: def, loaded: rec(20*24*time.Hour, time.Minute),
			c:      change{patch: set, data: aAndB, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: set, Created: t0, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "rotate unchanged within resolution still rotates", t: def, loaded: rec(time.Hour, time.Second),
			c:      change{data: justA, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "freeze wins over rotate and clear", t: def, loaded: rec(time.Hour, time.Hour),
			c: change{patch: backend.Patch{Replace: true}, rotate: true, freeze: true}},

		// Expired session: treated as absent, its row removed.
		{name: "idle-expired untouched: delete dead row, expire cookie", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "absolute-expired untouched: delete dead row", t: def, loaded: rec(30*24*time.Hour, time.Minute),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "expired then set: fresh key replaces dead row", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c:    change{patch: backend.Patch{Set: full.Set, Delete: []string{"x"}}, data: justB, rotate: true},
			want: backend.Action{Op: backend.OpInsert, Old: id, Patch: full, Created: t0, Accessed: t0}, cookie: cookieSet, expires: newExpiry},
		{name: "just before idle expiry: live", t: def, loaded: rec(9*time.Hour, 8*time.Hour-time.Microsecond),
			c: change{data: justA}, want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0}, cookie: cookieSet, expires: newExpiry},
		{name: "expiry disabled: old session live", t: policy{idle: -1, absolute: -1, resolution: -1},
			loaded: rec(400*24*time.Hour, 300*24*time.Hour), c: change{data: justA}},

		// Principal and rotation triggers.
		{name: "principal set on a new session", t: principal, c: change{patch: setUser(`42`), data: map[string]json.RawMessage{"user_id": json.RawMessage(`42`)}},
			want: backend.Action{Op: backend.OpInsert, Patch: backend.Patch{Replace: true, Set: map[string]json.RawMessage{"user_id": json.RawMessage(`42`)}},
				Created: t0, Accessed: t0, SetPrincipal: true, Principal: "42"},
			cookie: cookieSet, expires: newExpiry},
		{name: "login without RotateKey rotates (principal appears)", t: principal, loaded: rec(time.Hour, time.Minute),
			c:      change{patch: setUser(`"ada"`), data: user(`"ada"`)},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: setUser(`"ada"`), Created: t0, Accessed: t0, SetPrincipal: true, Principal: "ada"},
			cookie: cookieSet, expires: newExpiry},
		{name: "principal changes: rotate", t: principal, loaded: withUser(`"ada"`),
			c:      change{patch: setUser(`"bob"`), data: user(`"bob"`)},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: setUser(`"bob"`), Created: t0, Accessed: t0, SetPrincipal: true, Principal: "bob"},
			cookie: cookieSet, expires: newExpiry},
		{name: "principal re-set to an equal value (42.0 = 42): update, no rotation", t: principal, loaded: withUser(`42`),
			c:      change{patch: setUser(`42.0`), data: user(`42.0`)},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Patch: setUser(`42.0`), SetPrincipal: true, Principal: "42"},
			cookie: cookieSet, expires: newExpiry.Add(-time.Minute)},
		{name: "other keys change: principal untouched", t: principal, loaded: withUser(`"ada"`),
			c:    change{patch: set, data: map[string]json.RawMessage{"a": json.RawMessage(`1`), "b": json.RawMessage(`2`), "user_id": json.RawMessage(`"ada"`)}},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set}, cookie: cookieSet, expires: newExpiry.Add(-time.Minute)},
		{name: "principal key deleted (logout without RotateKey): rotate and clear principal", t: principal, loaded: withUser(`"ada"`),
			c:      change{patch: backend.Patch{Delete: []string{"user_id"}}, data: justA},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: backend.Patch{Delete: []string{"user_id"}}, Created: t0, Accessed: t0, SetPrincipal: true},
			cookie: cookieSet, expires: newExpiry},
		{name: "RotateWhen says yes", t: policy{idle: def.idle, resolution: def.resolution, rotateWhen: func(old, new map[string]json.RawMessage) bool {
			return string(old["a"]) != string(new["a"])
		}}, loaded: rec(time.Hour, time.Minute),
			c:      change{patch: backend.Patch{Set: map[string]json.RawMessage{"a": json.RawMessage(`2`)}}, data: map[string]json.RawMessage{"a": json.RawMessage(`2`)}},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Patch: backend.Patch{Set: map[string]json.RawMessage{"a": json.RawMessage(`2`)}}, Created: t0, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "freeze on expired: nothing", t: def, loaded: rec(9*time.Hour, 8*time.Hour), c: change{freeze: true}},

		// Own lifetimes (SetLifetime).
		{name: "SessionOnly: cookie without expiry", t: sessionOnly, c: change{patch: set, data: justB},
			want: createdNow, cookie: cookieSet},
		{name: "remember me on a new session: stored, persistent cookie despite SessionOnly", t: sessionOnly,
			c:      change{patch: set, data: justB, lifetime: month},
			want:   backend.Action{Op: backend.OpInsert, Patch: full, Created: t0, Accessed: t0, Lifetime: month, Expires: t0.Add(30 * 24 * time.Hour)},
			cookie: cookieSet, expires: t0.Add(30 * 24 * time.Hour)},
		{name: "own lifetime outlives Config's idle timeout", t: def, loaded: own(month, 10*24*time.Hour, 9*time.Hour),
			c:      change{data: justA},
			want:   backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0, Expires: t0.Add(30 * 24 * time.Hour)},
			cookie: cookieSet, expires: t0.Add(30 * 24 * time.Hour)},
		{name: "own short idle timeout ends the session", t: def, loaded: own(minute, 10*time.Minute, time.Minute),
			c: change{}, want: backend.Action{Op: backend.OpDelete, Old: id}, cookie: cookieExpire},
		{name: "own short idle timeout: resolution an eighth of it", t: def, loaded: own(minute, 10*time.Minute, 8*time.Second),
			c:    change{data: justA},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Accessed: t0, Expires: t0.Add(time.Minute)}, cookie: cookieSet},
		{name: "own lifetime, data change within resolution: expiry as stored", t: def, loaded: own(hour, 2*time.Hour, time.Minute),
			c:    change{patch: set, data: aAndB},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Patch: set, Expires: t0.Add(59 * time.Minute)}, cookie: cookieSet},
		{name: "rotation keeps the own lifetime", t: def, loaded: own(month, 40*24*time.Hour, time.Hour),
			c:      change{data: justA, rotate: true},
			want:   backend.Action{Op: backend.OpRotate, Old: id, Created: t0, Accessed: t0, Expires: t0.Add(30 * 24 * time.Hour)},
			cookie: cookieSet, expires: t0.Add(30 * 24 * time.Hour)},
		{name: "a new lifetime alone is written", t: def, loaded: rec(time.Hour, time.Minute),
			c:    change{data: justA, lifetime: hour},
			want: backend.Action{Op: backend.OpUpdate, Old: id, Lifetime: hour, Expires: t0.Add(59 * time.Minute)}, cookie: cookieSet},
		{name: "an expired session does not pass its lifetime to its successor", t: def, loaded: own(minute, time.Hour, time.Hour),
			c:    change{patch: set, data: justB},
			want: backend.Action{Op: backend.OpInsert, Old: id, Patch: full, Created: t0, Accessed: t0}, cookie: cookieSet, expires: newExpiry},
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
