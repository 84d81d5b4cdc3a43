package pgsession

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestDecide is the whole session policy as a table: (loaded record, the
// request's change, now, timeouts) → (action, cookie). No database.
func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	def := timeouts{idle: 8 * time.Hour, absolute: 30 * 24 * time.Hour, resolution: 10 * time.Minute}
	id := ID{1}
	rec := func(created, accessed time.Duration) *Record {
		return &Record{ID: id, Data: map[string]json.RawMessage{"a": json.RawMessage(`1`)},
			Created: t0.Add(-created), Accessed: t0.Add(-accessed)}
	}
	set := Patch{Set: map[string]json.RawMessage{"b": json.RawMessage(`2`)}}
	del := Patch{Delete: []string{"a"}}
	full := Patch{Replace: true, Set: map[string]json.RawMessage{"b": json.RawMessage(`2`)}}
	createdNow := Action{Op: OpInsert, Patch: full, Created: t0, Accessed: t0}
	newExpiry := t0.Add(8 * time.Hour)

	tests := []struct {
		name    string
		t       timeouts
		loaded  *Record
		c       change
		want    Action
		cookie  cookieOp
		expires time.Time
	}{
		// No session loaded.
		{name: "anonymous untouched: nothing", t: def, c: change{empty: true}},
		{name: "anonymous rotate with nothing stored: nothing", t: def, c: change{empty: true, rotate: true}},
		{name: "anonymous sets data: insert, new cookie", t: def, c: change{patch: set},
			want: createdNow, cookie: cookieSet, expires: newExpiry},
		{name: "anonymous sets and rotates: one insert", t: def, c: change{patch: set, rotate: true},
			want: createdNow, cookie: cookieSet, expires: newExpiry},
		{name: "freeze wins over a new session", t: def, c: change{patch: set, freeze: true}},

		// Live session.
		{name: "unchanged within resolution: no write, no cookie", t: def, loaded: rec(time.Hour, 9*time.Minute),
			c: change{}},
		{name: "unchanged at resolution: touch", t: def, loaded: rec(time.Hour, 10*time.Minute),
			c:      change{},
			want:   Action{Op: OpUpdate, Old: id, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "resolution disabled: every request touches", t: timeouts{idle: time.Hour, resolution: -1},
			loaded: rec(time.Hour, time.Second), c: change{},
			want: Action{Op: OpUpdate, Old: id, Accessed: t0}, cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "idle disabled: unchanged never touches", t: timeouts{absolute: time.Hour * 24, resolution: time.Minute},
			loaded: rec(time.Hour, 5*time.Hour), c: change{}},
		{name: "changed within resolution: update", t: def, loaded: rec(time.Hour, time.Minute), c: change{patch: set},
			want:   Action{Op: OpUpdate, Old: id, Patch: set, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "cookie expiry capped by absolute timeout", t: def, loaded: rec(30*24*time.Hour-time.Hour, time.Minute),
			c:      change{patch: set},
			want:   Action{Op: OpUpdate, Old: id, Patch: set, Accessed: t0},
			cookie: cookieSet, expires: t0.Add(time.Hour)},
		{name: "no timeouts: session cookie", t: timeouts{resolution: -1}, loaded: rec(time.Hour, time.Minute),
			c:    change{patch: set},
			want: Action{Op: OpUpdate, Old: id, Patch: set, Accessed: t0}, cookie: cookieSet},
		{name: "deleted last key: delete row, expire cookie", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: del, empty: true}, want: Action{Op: OpDelete, Old: id}, cookie: cookieExpire},
		{name: "cleared and rotated (logout): delete", t: def, loaded: rec(time.Hour, time.Minute),
			c: change{patch: Patch{Replace: true}, empty: true, rotate: true}, want: Action{Op: OpDelete, Old: id}, cookie: cookieExpire},
		{name: "rotate (login): data moves, creation restarts", t: def, loaded: rec(20*24*time.Hour, time.Minute),
			c:      change{patch: set, rotate: true},
			want:   Action{Op: OpRotate, Old: id, Patch: set, Created: t0, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "rotate unchanged within resolution still rotates", t: def, loaded: rec(time.Hour, time.Second),
			c:      change{rotate: true},
			want:   Action{Op: OpRotate, Old: id, Created: t0, Accessed: t0},
			cookie: cookieSet, expires: newExpiry},
		{name: "freeze wins over rotate and clear", t: def, loaded: rec(time.Hour, time.Hour),
			c: change{patch: Patch{Replace: true}, empty: true, rotate: true, freeze: true}},

		// Expired session: treated as absent, its row removed.
		{name: "idle-expired untouched: delete dead row, expire cookie", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c: change{empty: true}, want: Action{Op: OpDelete, Old: id}, cookie: cookieExpire},
		{name: "absolute-expired untouched: delete dead row", t: def, loaded: rec(30*24*time.Hour, time.Minute),
			c: change{empty: true}, want: Action{Op: OpDelete, Old: id}, cookie: cookieExpire},
		{name: "expired then set: fresh key replaces dead row", t: def, loaded: rec(9*time.Hour, 8*time.Hour),
			c:    change{patch: Patch{Set: full.Set, Delete: []string{"x"}}, rotate: true},
			want: Action{Op: OpInsert, Old: id, Patch: full, Created: t0, Accessed: t0}, cookie: cookieSet, expires: newExpiry},
		{name: "just before idle expiry: live", t: def, loaded: rec(9*time.Hour, 8*time.Hour-time.Microsecond),
			c: change{}, want: Action{Op: OpUpdate, Old: id, Accessed: t0}, cookie: cookieSet, expires: newExpiry},
		{name: "expiry disabled: old session live", t: timeouts{idle: -1, absolute: -1, resolution: -1},
			loaded: rec(400*24*time.Hour, 300*24*time.Hour), c: change{}},
		{name: "freeze on expired: nothing", t: def, loaded: rec(9*time.Hour, 8*time.Hour), c: change{empty: true, freeze: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.t.decide(tt.loaded, tt.c, t0)
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
