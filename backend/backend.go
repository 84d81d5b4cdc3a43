// Package backend defines the contract between pgsession and the stores
// that keep its sessions, as database/sql/driver does for database/sql.
// Applications and handlers rarely need it: they choose a store with
// pgsession.NewPostgresBackend or pgsession.NewMemoryBackend and use the
// root package (one that picks its store at run time may hold it in a
// Backend variable). Implement it to store sessions elsewhere.
//
// The session policy (timeouts, timeout resolution, rotation, freeze, empty
// sessions) is decided by pgsession alone: it yields an Action, and a
// Backend only executes Actions, never deciding anything itself. A
// backend must guarantee:
//
//   - Each Action is atomic (one statement or one transaction), with the
//     exact semantics documented on the Op constants: an insert or rotation
//     repeated after its first attempt succeeded succeeds again and writes
//     nothing more; an update or rotation that finds its row gone returns
//     ErrGone and creates nothing; a rotation and a concurrent
//     DeleteByPrincipal never leave the row alive under its new ID.
//   - A Patch is applied to what is stored at that moment, not to what the
//     request loaded, so concurrent requests that change different keys
//     do not overwrite each other.
//   - Load returns expired sessions too (expiry is the policy's decision),
//     and ErrNotFound for an unknown ID.
//   - An Apply whose context ends before it returns reports an error (its
//     outcome is unknown), never success.
//   - Every method is safe for concurrent use.
//
// The conformance suite pgsessiontest.TestBackend checks all of this, and
// every session behaviour through pgsession's middleware over real HTTP;
// both built-in backends (packages pgstore and memstore) pass it, and a new
// backend should too:
//
//	func TestMyBackend(t *testing.T) {
//		pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend { return newMyBackend(t) })
//	}
package backend

import (
	"context"
	"errors"
)

// Backend stores sessions. Implementations must be safe for concurrent use.
// The conformance tests (pgsessiontest.TestBackend, run against every
// built-in backend) define the exact semantics; a new backend should pass
// them too.
type Backend interface {
	// Load returns the session stored under id whose SessionID is sid,
	// expired or not (expiry is the policy's decision), or ErrNotFound. A
	// zero sid (a token issued before tokens carried the session ID) loads
	// by id alone. Either way the Record carries the stored SessionID, which
	// the actions on the row then carry in OldSessionID.
	//
	// When no row is stored under id and sid is not zero, Load returns the
	// row of sid whose immediate predecessor is id (see OpRotate), with
	// Record.Predecessor set and Record.ID its current ID: one more indexed
	// read, only for a key that names no row. pgsession decides what such
	// a request may do.
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

// PrincipalBackend is implemented by backends that index sessions by
// principal (see pgsession's Config.PrincipalKey). Both built-in backends do.
type PrincipalBackend interface {
	// DeleteByPrincipal removes sessions of principal and returns how many
	// it removed: every one, or with a non-zero only just the session named
	// only, or with a non-zero except every one but that. A session whose
	// key is rotated at the same time is matched by its SessionID, which the
	// rotation keeps, so it cannot escape the deletion.
	DeleteByPrincipal(ctx context.Context, principal string, only, except SessionID) (int, error)
	// ListByPrincipal returns the sessions of principal, most recently
	// accessed first, expired or not, with every Record field but Data.
	ListByPrincipal(ctx context.Context, principal string) ([]Record, error)
}

// ExclusiveCleaner is implemented by backends shared between processes
// (the PostgreSQL backend is), so that of several instances running
// pgsession's Manager.RunCleanup only one deletes at a time. A wrapper
// around such a backend should forward it.
type ExclusiveCleaner interface {
	// DeleteExpiredExclusive is Backend.DeleteExpired done only while no
	// other DeleteExpiredExclusive runs on the same store: when one does, it
	// removes nothing and reports ok false. The exclusion lasts exactly as
	// long as the call, so nothing can be left locked.
	DeleteExpiredExclusive(ctx context.Context, c Cutoffs, limit int) (n int, ok bool, err error)
}

var (
	// ErrNotFound is returned by Backend.Load when no session has the given ID.
	ErrNotFound = errors.New("pgsession: session not found")
	// ErrGone is returned by Backend.Apply when the row an update or rotation
	// targets no longer exists. The middleware treats it as a lost race with a
	// logout or rotation: nothing is recreated and no cookie is sent; it
	// follows a renewal that moved the row (see pgsession's
	// Config.RotationGrace), and refuses a data change it cannot store.
	ErrGone = errors.New("pgsession: session was deleted concurrently")
)
