package pgsessiontest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// TestBackend runs the conformance suite: the Backend contract called
// directly, then every session behaviour (load, expiry, rotation, freeze,
// timeout resolution, concurrency, cookies, bad input) through
// pgsession.Manager over real HTTP. newBackend must return a fresh, empty
// backend each time it is called; subtests may run in parallel.
//
// A new Backend implementation proves itself with:
//
//	func TestMyBackend(t *testing.T) {
//		pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend { return newMyBackend(t) })
//	}
func TestBackend(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Run("contract", func(t *testing.T) { testContract(t, newBackend) })
	t.Run("behaviour", func(t *testing.T) { testBehaviour(t, newBackend) })
	t.Run("extras", func(t *testing.T) { testExtras(t, newBackend) })
	t.Run("security", func(t *testing.T) { testSecurity(t, newBackend) })
	t.Run("lifetimes and devices", func(t *testing.T) { testLifetimesAndDevices(t, newBackend) })
	t.Run("api", func(t *testing.T) { testAPI(t, newBackend) })
	t.Run("regenerate race", func(t *testing.T) { testRace(t, newBackend) })
}

// Contract: the Backend methods called directly.

func raw(kv ...string) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	return m
}

func newID() backend.ID { return backend.ID(randomBytes(32)) }

func newSID() pgsession.SessionID { return pgsession.SessionID(randomBytes(16)) }

// sidOf is the SessionID the contract tests store the row first inserted
// under id with: random, as id is. A rotated row keeps it.
func sidOf(id backend.ID) pgsession.SessionID { return pgsession.SessionID(id[:16]) }

// sameData compares JSON data by meaning, since backends may reformat it.
func sameData(a, b map[string]json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		var x, y any
		if json.Unmarshal(va, &x) != nil || json.Unmarshal(vb, &y) != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func mustApply(t *testing.T, b backend.Backend, a backend.Action) {
	t.Helper()
	if err := b.Apply(context.Background(), a); err != nil {
		t.Fatalf("Apply(%v): %v", a.Op, err)
	}
}

// mustLoad loads the row under id whose SessionID is sid, both ways: by
// both, and by id alone (a token of the old form).
func mustLoad(t *testing.T, b backend.Backend, id backend.ID, sid pgsession.SessionID) *backend.Record {
	t.Helper()
	rec, err := b.Load(context.Background(), id, sid)
	if err != nil {
		t.Fatalf("Load(%s, %s): %v", id, sid, err)
	}
	if rec.SessionID != sid {
		t.Fatalf("Load(%s, %s): SessionID %s", id, sid, rec.SessionID)
	}
	alone, err := b.Load(context.Background(), id, pgsession.SessionID{})
	if err != nil || alone.SessionID != sid || !sameData(alone.Data, rec.Data) {
		t.Fatalf("Load(%s) by id alone = %+v, %v; want the row of %s", id, alone, err, sid)
	}
	return rec
}

// wantGone checks that no row is under id, whatever its SessionID.
func wantGone(t *testing.T, b backend.Backend, id backend.ID) {
	t.Helper()
	if rec, err := b.Load(context.Background(), id, pgsession.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Load(%s) = %+v, %v; want ErrNotFound", id, rec, err)
	}
	if rec, err := b.Load(context.Background(), id, sidOf(id)); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Load(%s, %s) = %+v, %v; want ErrNotFound", id, sidOf(id), rec, err)
	}
}

// wantPredecessor checks that old names no row but is the immediate
// predecessor of the row now under current, whose SessionID is sid: Load
// finds that row by old and sid (never by old alone), reporting it.
func wantPredecessor(t *testing.T, b backend.Backend, old, current backend.ID, sid pgsession.SessionID, renewal bool) *backend.Record {
	t.Helper()
	if rec, err := b.Load(context.Background(), old, pgsession.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Load(%s) by id alone = %+v, %v; want ErrNotFound", old, rec, err)
	}
	rec, err := b.Load(context.Background(), old, sid)
	if err != nil {
		t.Fatalf("Load(%s, %s) of a predecessor: %v", old, sid, err)
	}
	if !rec.Predecessor || rec.ID != current || rec.SessionID != sid || rec.Renewal != renewal || rec.Rotated.IsZero() {
		t.Fatalf("Load(%s, %s) of a predecessor = %+v; want Predecessor, ID %s, Renewal %v, Rotated set", old, sid, rec, current, renewal)
	}
	return rec
}

// insert stores a row under id and sidOf(id).
func insert(t *testing.T, b backend.Backend, id backend.ID, data map[string]json.RawMessage, created, accessed time.Time) {
	t.Helper()
	mustApply(t, b, backend.Action{Op: backend.OpInsert, New: id, SessionID: sidOf(id),
		Patch: backend.Patch{Replace: true, Set: data}, Created: created, Accessed: accessed})
}

func testContract(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	ctx := context.Background()
	t0 := Epoch

	t.Run("load missing is ErrNotFound", func(t *testing.T) {
		t.Parallel()
		wantGone(t, newBackend(t), newID())
	})

	t.Run("insert then load round-trips data and times", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		id := newID()
		data := raw("user", `"ada"`, "n", `9007199254740993`, "nested", `{"z":[1,2,{"é":"ü"}],"a":null}`, "emoji", `"🔑 \"quoted\" \\ <tag>"`)
		insert(t, b, id, data, t0, t0.Add(time.Minute))
		rec := mustLoad(t, b, id, sidOf(id))
		if !sameData(rec.Data, data) {
			t.Errorf("data = %s, want %s", rec.Data, data)
		}
		if rec.ID != id || !rec.Created.Equal(t0) || !rec.Accessed.Equal(t0.Add(time.Minute)) {
			t.Errorf("record = %v %v %v, want %v %v %v", rec.ID, rec.Created, rec.Accessed, id, t0, t0.Add(time.Minute))
		}
		var n int64
		if err := json.Unmarshal(rec.Data["n"], &n); err != nil || n != 9007199254740993 {
			t.Errorf("big integer = %d (%v), want exact 9007199254740993", n, err)
		}
	})

	t.Run("insert replaces a dead row", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		dead, fresh := newID(), newID()
		insert(t, b, dead, raw("a", `1`), t0, t0)
		mustApply(t, b, backend.Action{Op: backend.OpInsert, Old: dead, OldSessionID: sidOf(dead), New: fresh, SessionID: sidOf(fresh),
			Patch: backend.Patch{Replace: true, Set: raw("b", `2`)}, Created: t0, Accessed: t0})
		wantGone(t, b, dead)
		if rec := mustLoad(t, b, fresh, sidOf(fresh)); !sameData(rec.Data, raw("b", `2`)) {
			t.Errorf("data = %s", rec.Data)
		}
		// The dead row may already be gone: still fine.
		mustApply(t, b, backend.Action{Op: backend.OpInsert, Old: dead, OldSessionID: sidOf(dead), New: newID(), SessionID: newSID(),
			Patch: backend.Patch{Replace: true, Set: raw("c", `3`)}, Created: t0, Accessed: t0})
	})

	t.Run("update merges, deletes, replaces and moves access forward only", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		id := newID()
		insert(t, b, id, raw("a", `1`, "b", `2`, "c", `3`), t0, t0)
		mustApply(t, b, backend.Action{Op: backend.OpUpdate, Old: id, OldSessionID: sidOf(id),
			Patch: backend.Patch{Set: raw("b", `20`, "d", `4`), Delete: []string{"c", "absent"}}, Accessed: t0.Add(time.Hour)})
		rec := mustLoad(t, b, id, sidOf(id))
		if want := raw("a", `1`, "b", `20`, "d", `4`); !sameData(rec.Data, want) {
			t.Errorf("after merge: %s, want %s", rec.Data, want)
		}
		if !rec.Accessed.Equal(t0.Add(time.Hour)) || !rec.Created.Equal(t0) {
			t.Errorf("times = %v %v", rec.Created, rec.Accessed)
		}
		// A touch (empty patch) that is older than the stored time changes nothing.
		mustApply(t, b, backend.Action{Op: backend.OpUpdate, Old: id, OldSessionID: sidOf(id), Accessed: t0.Add(time.Minute)})
		if rec := mustLoad(t, b, id, sidOf(id)); !rec.Accessed.Equal(t0.Add(time.Hour)) {
			t.Errorf("access time went backwards to %v", rec.Accessed)
		}
		mustApply(t, b, backend.Action{Op: backend.OpUpdate, Old: id, OldSessionID: sidOf(id),
			Patch: backend.Patch{Replace: true, Set: raw("only", `true`)}, Accessed: t0.Add(2 * time.Hour)})
		if rec := mustLoad(t, b, id, sidOf(id)); !sameData(rec.Data, raw("only", `true`)) || !rec.Accessed.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("after replace: %s at %v", rec.Data, rec.Accessed)
		}
		// A zero Accessed changes the data and leaves the access time.
		mustApply(t, b, backend.Action{Op: backend.OpUpdate, Old: id, OldSessionID: sidOf(id), Patch: backend.Patch{Set: raw("z", `1`)}})
		if rec := mustLoad(t, b, id, sidOf(id)); rec.Data["z"] == nil || !rec.Accessed.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("update without access time: %s at %v", rec.Data, rec.Accessed)
		}
	})

	t.Run("update or rotate of a missing row is ErrGone and creates nothing", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		old, fresh := newID(), newID()
		err := b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: old, OldSessionID: sidOf(old), Patch: backend.Patch{Set: raw("a", `1`)}, Accessed: t0})
		if !errors.Is(err, backend.ErrGone) {
			t.Errorf("update: err = %v, want ErrGone", err)
		}
		err = b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: old, OldSessionID: sidOf(old), Accessed: t0})
		if !errors.Is(err, backend.ErrGone) {
			t.Errorf("touch: err = %v, want ErrGone", err)
		}
		err = b.Apply(ctx, backend.Action{Op: backend.OpRotate, Old: old, OldSessionID: sidOf(old), New: fresh, Patch: backend.Patch{Set: raw("a", `1`)}, Created: t0, Accessed: t0})
		if !errors.Is(err, backend.ErrGone) {
			t.Errorf("rotate: err = %v, want ErrGone", err)
		}
		wantGone(t, b, old)
		wantGone(t, b, fresh)
	})

	t.Run("rotate moves merged data to the new id", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		old, fresh := newID(), newID()
		insert(t, b, old, raw("a", `1`, "b", `2`), t0, t0)
		mustApply(t, b, backend.Action{Op: backend.OpRotate, Old: old, OldSessionID: sidOf(old), New: fresh,
			Patch: backend.Patch{Set: raw("user", `"ada"`), Delete: []string{"b"}}, Created: t0.Add(time.Hour), Accessed: t0.Add(time.Hour)})
		wantPredecessor(t, b, old, fresh, sidOf(old), false)
		rec := mustLoad(t, b, fresh, sidOf(old)) // the rotation keeps the SessionID
		if !sameData(rec.Data, raw("a", `1`, "user", `"ada"`)) || !rec.Created.Equal(t0.Add(time.Hour)) || !rec.Accessed.Equal(t0.Add(time.Hour)) {
			t.Errorf("rotated = %s %v %v", rec.Data, rec.Created, rec.Accessed)
		}
	})

	t.Run("a rotation remembers its immediate predecessor, and only it", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		k0, k1, k2 := newID(), newID(), newID()
		sid := sidOf(k0)
		insert(t, b, k0, raw("user", `"ada"`), t0, t0)
		if rec := mustLoad(t, b, k0, sid); rec.Predecessor || !rec.Rotated.IsZero() {
			t.Errorf("a row never rotated: Predecessor %v, Rotated %v", rec.Predecessor, rec.Rotated)
		}
		at1 := t0.Add(time.Minute)
		mustApply(t, b, backend.Action{Op: backend.OpRotate, Old: k0, OldSessionID: sid, New: k1, Created: t0, Accessed: at1, Renewal: true})
		if rec := wantPredecessor(t, b, k0, k1, sid, true); !rec.Rotated.Equal(at1) || !sameData(rec.Data, raw("user", `"ada"`)) || !rec.Created.Equal(t0) {
			t.Errorf("predecessor's row: rotated %v, created %v, data %s", rec.Rotated, rec.Created, rec.Data)
		}
		if rec := mustLoad(t, b, k1, sid); rec.Predecessor || !rec.Rotated.Equal(at1) {
			t.Errorf("by the current key: Predecessor %v, Rotated %v", rec.Predecessor, rec.Rotated)
		}
		if _, err := b.Load(ctx, k0, newSID()); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("predecessor with another SessionID: %v, want ErrNotFound", err)
		}
		// Actions name the row by its current ID only.
		if err := b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: k0, OldSessionID: sid, Patch: backend.Patch{Set: raw("x", `1`)}}); !errors.Is(err, backend.ErrGone) {
			t.Errorf("update by the predecessor: %v, want ErrGone", err)
		}
		at2 := t0.Add(2 * time.Minute)
		mustApply(t, b, backend.Action{Op: backend.OpRotate, Old: k1, OldSessionID: sid, New: k2, Created: at2, Accessed: at2,
			Patch: backend.Patch{Set: raw("user", `"bob"`)}})
		wantGone(t, b, k0) // older than the immediate predecessor
		if rec := wantPredecessor(t, b, k1, k2, sid, false); !rec.Rotated.Equal(at2) {
			t.Errorf("second rotation at %v, want %v", rec.Rotated, at2)
		}
		mustApply(t, b, backend.Action{Op: backend.OpDelete, Old: k2, OldSessionID: sid})
		wantGone(t, b, k1) // the session is gone, and its predecessor with it
		wantGone(t, b, k2)
	})

	t.Run("insert and rotate repeated after success succeed once", func(t *testing.T) {
		// A retry after a lost answer: the new key is random, so a row under
		// it is the first attempt's.
		t.Parallel()
		b := newBackend(t)
		dead, id, rotated := newID(), newID(), newID()
		insert(t, b, dead, raw("x", `0`), t0, t0)
		ins := backend.Action{Op: backend.OpInsert, Old: dead, OldSessionID: sidOf(dead), New: id, SessionID: sidOf(id),
			Patch: backend.Patch{Replace: true, Set: raw("a", `1`)}, Created: t0, Accessed: t0}
		mustApply(t, b, ins)
		mustApply(t, b, ins)
		wantGone(t, b, dead)
		if rec := mustLoad(t, b, id, sidOf(id)); !sameData(rec.Data, raw("a", `1`)) {
			t.Errorf("after repeated insert: %s", rec.Data)
		}
		rot := backend.Action{Op: backend.OpRotate, Old: id, OldSessionID: sidOf(id), New: rotated,
			Patch: backend.Patch{Set: raw("b", `2`)}, Created: t0.Add(time.Hour), Accessed: t0.Add(time.Hour)}
		mustApply(t, b, rot)
		mustApply(t, b, rot)
		wantPredecessor(t, b, id, rotated, sidOf(id), false)
		rec := mustLoad(t, b, rotated, sidOf(id))
		if !sameData(rec.Data, raw("a", `1`, "b", `2`)) || !rec.Created.Equal(t0.Add(time.Hour)) {
			t.Errorf("after repeated rotation: %s created %v", rec.Data, rec.Created)
		}
		// A different rotation of the gone row is still refused.
		err := b.Apply(ctx, backend.Action{Op: backend.OpRotate, Old: id, OldSessionID: sidOf(id), New: newID(), Created: t0, Accessed: t0})
		if !errors.Is(err, backend.ErrGone) {
			t.Errorf("another rotation of the old row: %v, want ErrGone", err)
		}
	})

	t.Run("delete removes; deleting a missing row is fine", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		id := newID()
		insert(t, b, id, raw("a", `1`), t0, t0)
		mustApply(t, b, backend.Action{Op: backend.OpDelete, Old: id, OldSessionID: sidOf(id)})
		wantGone(t, b, id)
		mustApply(t, b, backend.Action{Op: backend.OpDelete, Old: id, OldSessionID: sidOf(id)})
	})

	t.Run("a row is named by its ID and SessionID together", func(t *testing.T) {
		// A token carries both; one of the old form, the ID alone.
		t.Parallel()
		b := newBackend(t)
		id, other := newID(), newSID()
		insert(t, b, id, raw("a", `1`), t0, t0)
		if rec, err := b.Load(ctx, id, other); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Load with another SessionID = %+v, %v; want ErrNotFound", rec, err)
		}
		for _, a := range []backend.Action{
			{Op: backend.OpUpdate, Old: id, OldSessionID: other, Patch: backend.Patch{Set: raw("b", `2`)}, Accessed: t0.Add(time.Hour)},
			{Op: backend.OpUpdate, Old: id, OldSessionID: other, Accessed: t0.Add(time.Hour)},
			{Op: backend.OpUpdate, Old: id, OldSessionID: other, Patch: backend.Patch{Replace: true, Set: raw("b", `2`)}, Accessed: t0.Add(time.Hour)},
			{Op: backend.OpRotate, Old: id, OldSessionID: other, New: newID(), Created: t0, Accessed: t0},
		} {
			if err := b.Apply(ctx, a); !errors.Is(err, backend.ErrGone) {
				t.Errorf("%v with another SessionID: %v, want ErrGone", a.Op, err)
			}
		}
		mustApply(t, b, backend.Action{Op: backend.OpDelete, Old: id, OldSessionID: other})
		mustApply(t, b, backend.Action{Op: backend.OpInsert, Old: id, OldSessionID: other, New: newID(), SessionID: newSID(),
			Patch: backend.Patch{Replace: true, Set: raw("c", `3`)}, Created: t0, Accessed: t0})
		if rec := mustLoad(t, b, id, sidOf(id)); !sameData(rec.Data, raw("a", `1`)) || !rec.Accessed.Equal(t0) {
			t.Errorf("after actions naming another SessionID: %s at %v, want it untouched", rec.Data, rec.Accessed)
		}
	})

	t.Run("concurrent updates of different keys all persist", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		id := newID()
		insert(t, b, id, raw("base", `0`), t0, t0)
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				errs <- b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: id, OldSessionID: sidOf(id),
					Patch: backend.Patch{Set: raw(fmt.Sprintf("k%d", i), fmt.Sprint(i))}, Accessed: t0.Add(time.Duration(i) * time.Second)})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		rec := mustLoad(t, b, id, sidOf(id))
		if len(rec.Data) != n+1 {
			t.Errorf("got %d keys, want %d: %s", len(rec.Data), n+1, rec.Data)
		}
		if !rec.Accessed.Equal(t0.Add((n - 1) * time.Second)) {
			t.Errorf("accessed = %v, want the latest", rec.Accessed)
		}
	})

	t.Run("concurrent rotations of one session: exactly one wins", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		old := newID()
		insert(t, b, old, raw("a", `1`), t0, t0)
		const n = 8
		ids := make([]backend.ID, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			ids[i] = newID()
			wg.Go(func() {
				errs[i] = b.Apply(ctx, backend.Action{Op: backend.OpRotate, Old: old, OldSessionID: sidOf(old), New: ids[i], Created: t0, Accessed: t0})
			})
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
				mustLoad(t, b, ids[i], sidOf(old))
			case errors.Is(err, backend.ErrGone):
				wantGone(t, b, ids[i])
			default:
				t.Errorf("rotation %d: %v", i, err)
			}
		}
		if won != 1 {
			t.Errorf("%d rotations succeeded, want exactly 1", won)
		}
		for i, err := range errs {
			if err == nil {
				wantPredecessor(t, b, old, ids[i], sidOf(old), false)
			}
		}
	})

	t.Run("delete expired removes exactly the expired rows, in bounded batches", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		cut := backend.Cutoffs{Now: t0, IdleBefore: t0.Add(-8 * time.Hour), CreatedBefore: t0.Add(-30 * 24 * time.Hour)}
		var live, idle, old []backend.ID
		for range 5 {
			id := newID()
			insert(t, b, id, raw("a", `1`), t0.Add(-time.Hour), t0.Add(-time.Minute))
			live = append(live, id)
			id = newID()
			insert(t, b, id, raw("a", `1`), t0.Add(-10*time.Hour), t0.Add(-9*time.Hour))
			idle = append(idle, id)
			id = newID()
			insert(t, b, id, raw("a", `1`), t0.Add(-31*24*time.Hour), t0.Add(-time.Minute))
			old = append(old, id)
		}
		n, err := b.DeleteExpired(ctx, cut, 3)
		if err != nil || n != 3 {
			t.Fatalf("first batch = %d, %v; want 3", n, err)
		}
		total := n
		for n > 0 {
			if n, err = b.DeleteExpired(ctx, cut, 3); err != nil {
				t.Fatal(err)
			}
			total += n
		}
		if total != 10 {
			t.Errorf("removed %d, want 10", total)
		}
		for _, id := range live {
			mustLoad(t, b, id, sidOf(id))
		}
		for _, id := range append(idle, old...) {
			wantGone(t, b, id)
		}
		// Zero bounds disable a rule.
		insert(t, b, newID(), raw("a", `1`), t0.Add(-31*24*time.Hour), t0.Add(-9*time.Hour))
		if n, err := b.DeleteExpired(ctx, backend.Cutoffs{Now: t0}, 100); err != nil || n != 0 {
			t.Errorf("with no bounds removed %d, %v; want 0", n, err)
		}
	})
}
