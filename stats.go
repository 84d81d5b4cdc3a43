package pgsession

import (
	"sync/atomic"

	"github.com/pgsession/pgsession/backend"
)

// Stats are a Manager's cumulative counters since New. Reading them is
// cheap (atomic loads), so they can be exported to monitoring on every
// scrape.
//
// Inserts, Updates, Rotations and Deletes count statements that succeeded,
// each under its one kind: a save that writes adds 1 to exactly one of
// them, and a save of a live session that writes nothing adds 1 to
// SkippedWrites. So Rotations counts stored sessions moved to a new key,
// not calls of RotateKey: a RotateKey (or a change of the PrincipalKey
// value) on a session that has no row yet, such as a first login's, or
// whose row had expired, stores it under a fresh key with one insert, and
// counts in Inserts only. A login therefore adds 1 to Inserts when the
// visitor had no stored session, and 1 to Rotations when it had one (a
// cart, a flash message).
type Stats struct {
	Loads         uint64 // requests (and Manager.Load calls) that found a live session
	Misses        uint64 // valid cookies whose session was unknown or expired
	Inserts       uint64 // new sessions stored
	Updates       uint64 // sessions whose data or access time was written
	Rotations     uint64 // stored sessions moved to a new key: RotateKey, a changed PrincipalKey value, RotateWhen or RenewAfter on a session that had a row; a new session's rotation is its insert
	Deletes       uint64 // sessions deleted: cleared, expired on sight, and the rows removed by DeleteExpired, RunCleanup, DeleteByPrincipal and the other principal-wide deletes
	SkippedWrites uint64 // requests of a live session that wrote nothing (timeout resolution)
	LostRaces     uint64 // saves that found their session deleted by a concurrent logout or rotation
	StaleKeys     uint64 // requests with a key a concurrent rotation retired moments ago (see Config.RotationGrace): served after a renewal, given no session after a login or logout
	Errors        uint64 // requests answered by the ErrorHandler
	Ambiguous     uint64 // requests with cookies of two live sessions, or of more session keys than are read (3), served with none (cookie tossing)
}

// Stats returns the Manager's counters.
func (m *Manager) Stats() Stats {
	c := &m.stats
	return Stats{
		Loads:         c.loads.Load(),
		Misses:        c.misses.Load(),
		Inserts:       c.inserts.Load(),
		Updates:       c.updates.Load(),
		Rotations:     c.rotations.Load(),
		Deletes:       c.deletes.Load(),
		SkippedWrites: c.skipped.Load(),
		LostRaces:     c.gone.Load(),
		StaleKeys:     c.stale.Load(),
		Errors:        c.errors.Load(),
		Ambiguous:     c.ambiguous.Load(),
	}
}

// counters back Stats.
type counters struct {
	loads, misses, inserts, updates, rotations, deletes, skipped, gone, stale, errors, ambiguous atomic.Uint64
}

func (c *counters) count(op backend.Op) {
	switch op {
	case backend.OpInsert:
		c.inserts.Add(1)
	case backend.OpUpdate:
		c.updates.Add(1)
	case backend.OpRotate:
		c.rotations.Add(1)
	case backend.OpDelete:
		c.deletes.Add(1)
	}
}
