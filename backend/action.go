package backend

import (
	"encoding/json"
	"maps"
	"time"
)

// Op is the kind of write an Action asks a Backend to perform.
type Op uint8

// The operations a Backend executes. Each is atomic: one statement or one
// transaction.
const (
	// OpNone writes nothing.
	OpNone Op = iota
	// OpInsert stores a new session under New and SessionID with the data
	// Patch.Set, timestamps Created and Accessed. If Old is set, the
	// (expired) row Old (of OldSessionID) is removed in the same step,
	// whether or not it still exists. New is random, so a row already under
	// New is this insert's own earlier attempt: repeating an insert succeeds
	// and writes nothing more.
	OpInsert
	// OpUpdate applies Patch to the row Old and moves its access time forward
	// to Accessed (never backwards; a zero Accessed leaves it as it is). If
	// the row no longer exists it returns ErrGone and creates nothing.
	OpUpdate
	// OpRotate moves the row Old to the new ID New, applying Patch and setting
	// Created and Accessed; no row is left under Old, but the row remembers
	// Old as its predecessor, with Accessed as the time of the rotation
	// (Record.Rotated) and Renewal, replacing any predecessor it had: Load
	// given Old and the row's SessionID then returns the row with
	// Record.Predecessor set, and no older ID finds it. The row keeps its
	// SessionID (OldSessionID), so a backend sharded by it never moves the
	// row between shards. The move is one atomic
	// step that a concurrent bulk deletion (DeleteByPrincipal) cannot miss:
	// if the deletion matched the row under Old, the row under New is gone
	// too. Of concurrent rotations of one row exactly one succeeds. If the
	// old row no longer exists it returns ErrGone and creates nothing,
	// unless a row exists under New: that is this rotation's own earlier
	// attempt (New is random), so repeating a rotation succeeds.
	OpRotate
	// OpDelete removes the row Old. Removing a row that does not exist is not
	// an error.
	OpDelete
)

// String returns the operation's name.
func (op Op) String() string {
	switch op {
	case OpNone:
		return "none"
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpRotate:
		return "rotate"
	case OpDelete:
		return "delete"
	}
	return "unknown"
}

// Action is one write decided by the session policy. Backends execute actions;
// they never decide anything themselves.
type Action struct {
	Op       Op        // what to do; see the Op constants for each one's exact semantics
	Old      ID        // the row that was loaded (zero for a brand-new session)
	New      ID        // the row to create, for OpInsert and OpRotate
	Patch    Patch     // the data change, for OpInsert (Set is the whole data), OpUpdate and OpRotate
	Created  time.Time // for OpInsert and OpRotate
	Accessed time.Time // for OpInsert, OpUpdate and OpRotate

	// OldSessionID is the SessionID of the row Old, as Load returned it in
	// Record.SessionID (zero when Old is). Old and OldSessionID together
	// name the row: an action finds no row under Old with another
	// SessionID. The PostgreSQL backend keys every statement by both, so
	// that a table distributed by session_id (Citus) runs each on one shard.
	OldSessionID SessionID

	// SetPrincipal says the row's principal becomes Principal ("" for none).
	// Otherwise an update keeps the stored principal and a rotation carries
	// it to the new row. See pgsession's Config.PrincipalKey.
	SetPrincipal bool
	// Principal is the row's new principal when SetPrincipal is true ("" for
	// none); otherwise it is empty and ignored. For OpInsert it is always the
	// new row's principal.
	Principal string

	// SessionID is the new row's lasting name, for OpInsert. A rotation and
	// an update keep the stored one (OldSessionID).
	SessionID SessionID
	// Lifetime, if not nil, becomes the row's own lifetime (resolved, as in
	// Record); nil keeps the stored one (none for OpInsert).
	Lifetime *Lifetime
	// Expires is when the row expires under its own lifetime, as of this
	// write (zero if it has none, or never expires); backends keep it for
	// DeleteExpired. OpUpdate never moves it backwards unless Lifetime is
	// set; OpInsert and OpRotate set it.
	Expires time.Time
	// Device, if not nil, replaces the row's recorded client (OpInsert and
	// OpRotate, when pgsession's Config.Device is set).
	Device *Device
	// Renewal, for OpRotate, says the rotation keeps who is signed in (a
	// renewal), so that a request in flight with the predecessor may still
	// be served the session for a short while; otherwise (a login, a
	// logout, a change of user) the predecessor is remembered only so that
	// such a request is recognised and refused. Backends store it and
	// report it in Record.Renewal; they decide nothing with it.
	Renewal bool
}

// Patch is the change a request made to a session's data. Backends apply it
// atomically to what is stored at that moment, not to what the request loaded,
// so concurrent requests that change different keys do not overwrite each other.
type Patch struct {
	// Replace means the data becomes exactly Set (the handler called Clear);
	// otherwise Set is merged into the stored data and Delete removed from it.
	Replace bool
	// Set maps each key the request set to its new JSON value (every key,
	// with Replace).
	Set map[string]json.RawMessage
	// Delete lists the keys the request removed; none of them is in Set.
	// Empty with Replace.
	Delete []string
}

// Apply returns data with p applied, as a new map (data is not modified):
// what a backend stores, as PostgreSQL's (data || set) - delete computes it.
func (p Patch) Apply(data map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(data)+len(p.Set))
	if !p.Replace {
		maps.Copy(out, data)
		for _, k := range p.Delete {
			delete(out, k)
		}
	}
	maps.Copy(out, p.Set)
	return out
}

// IsEmpty reports whether the patch leaves the stored data unchanged.
func (p Patch) IsEmpty() bool { return !p.Replace && len(p.Set) == 0 && len(p.Delete) == 0 }

// Cutoffs say which sessions DeleteExpired removes: a session without a
// lifetime of its own that was last accessed before IdleBefore or created
// before CreatedBefore (a zero time disables that bound), and a session with
// one whose Expires is before Now.
type Cutoffs struct {
	Now, IdleBefore, CreatedBefore time.Time
}
