package pgsession

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ID identifies a stored session: the SHA-256 hash of the session key that
// the client holds. Backends only ever see IDs; the key itself is never stored,
// so a leaked table cannot be replayed as cookies.
type ID [sha256.Size]byte

// idOf returns the ID under which the session with the given key is stored.
func idOf(key []byte) ID { return sha256.Sum256(key) }

// String returns the ID in hexadecimal, for logs and debugging.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// SessionID names a session for its whole life: unlike its key (and the
// key's hash, ID), it stays the same when the key rotates, so a device list
// can show it and DeleteSession can take it while the session keeps being
// used. It is not a secret and cannot load or act as the session.
type SessionID [16]byte

// String returns the session ID in hexadecimal (32 characters).
func (id SessionID) String() string { return hex.EncodeToString(id[:]) }

// ParseSessionID parses the hexadecimal form that SessionID.String returns,
// for example from a "sign out this device" form.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("%w: session ID %q is not %d hexadecimal digits", ErrInvalidValue, s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: session ID %q: %w", ErrInvalidValue, s, err)
	}
	return id, nil
}

// newSessionID returns a random session ID.
func newSessionID() SessionID {
	var id SessionID
	_, _ = rand.Read(id[:]) // never fails (Go 1.24+)
	return id
}

// Record is a stored session as a Backend returns it from Load (every field)
// and ListByPrincipal (every field but Data).
type Record struct {
	ID        ID                         // the ID it was loaded by (the hash of its key)
	SessionID SessionID                  // the session's lasting name (see SessionID)
	Data      map[string]json.RawMessage // top-level keys and their JSON values
	Created   time.Time                  // when the session (or its current key) was created
	Accessed  time.Time                  // the last access that was written
	// Lifetime is the session's own lifetime (see SetLifetime), resolved:
	// each timeout positive, or negative for none. Nil: Config's apply.
	Lifetime *Lifetime
	Device   Device // the client that created or last rotated it, if recorded (ListByPrincipal only)
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

// IsEmpty reports whether the patch leaves the stored data unchanged.
func (p Patch) IsEmpty() bool { return !p.Replace && len(p.Set) == 0 && len(p.Delete) == 0 }

// touches reports whether the patch may change key.
func (p Patch) touches(key string) bool {
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
	// Created and Accessed; no row is left under Old. The row keeps its
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
	// SessionID. PostgresBackend keys every statement by both, so that a
	// table distributed by session_id (Citus) runs each on one shard.
	OldSessionID SessionID

	// SetPrincipal says the row's principal becomes Principal ("" for none).
	// Otherwise an update keeps the stored principal and a rotation carries
	// it to the new row. See Config.PrincipalKey.
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
	// OpRotate, when Config.Device is set).
	Device *Device
}

// Cutoffs say which sessions DeleteExpired removes: a session without a
// lifetime of its own that was last accessed before IdleBefore or created
// before CreatedBefore (a zero time disables that bound), and a session with
// one whose Expires is before Now.
type Cutoffs struct {
	Now, IdleBefore, CreatedBefore time.Time
}

// expired reports whether a row with these fields is past the cutoffs.
func (c Cutoffs) expired(created, accessed, expires time.Time, own bool) bool {
	if own {
		return !expires.IsZero() && expires.Before(c.Now)
	}
	return accessed.Before(c.IdleBefore) || created.Before(c.CreatedBefore)
}

// Backend stores sessions. Implementations must be safe for concurrent use.
// The package's conformance tests (run against every built-in backend) define
// the exact semantics; a new backend should pass them too.
type Backend interface {
	// Load returns the session stored under id whose SessionID is sid,
	// expired or not (expiry is the policy's decision), or ErrNotFound. A
	// zero sid (a token issued before tokens carried the session ID) loads
	// by id alone. Either way the Record carries the stored SessionID, which
	// the actions on the row then carry in OldSessionID.
	Load(ctx context.Context, id ID, sid SessionID) (*Record, error)
	// Apply executes a. It returns ErrGone when an OpUpdate or OpRotate finds
	// its row gone (deleted by a concurrent logout or rotation). Repeating
	// an OpInsert or OpRotate that succeeded succeeds again. An Apply whose
	// ctx ends before it returns reports an error (its outcome is unknown),
	// never success.
	Apply(ctx context.Context, a Action) error
	// DeleteExpired removes the sessions past c (see Cutoffs), at most
	// limit rows, and returns how many it removed.
	DeleteExpired(ctx context.Context, c Cutoffs, limit int) (int, error)
}

var (
	// ErrNotFound is returned by Backend.Load when no session has the given ID.
	ErrNotFound = errors.New("pgsession: session not found")
	// ErrGone is returned by Backend.Apply when the row an update or rotation
	// targets no longer exists. The middleware treats it as a lost race with a
	// logout or rotation: the request succeeds, nothing is recreated, and no
	// cookie is sent.
	ErrGone = errors.New("pgsession: session was deleted concurrently")
)
