// Package memstore is pgsession's in-memory backend: sessions in process
// memory, with the same semantics as the PostgreSQL backend (package
// pgstore), for development and tests. Applications get one with
// pgsession.NewMemoryBackend.
package memstore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// Backend keeps sessions in process memory, with the same semantics as
// the PostgreSQL backend (it passes the same conformance tests). Use it for
// development and tests: sessions are lost when the process exits and are
// not shared between processes. It is safe for concurrent use. The zero
// value is not usable; call New (pgsession.NewMemoryBackend).
type Backend struct {
	mu   sync.Mutex
	rows map[backend.ID]memoryRow
	// prevs maps each row's predecessor ID to the row's current ID, for
	// Load's predecessor lookup; one entry per rotated row at most.
	prevs map[backend.ID]backend.ID
}

type memoryRow struct {
	sessionID         backend.SessionID
	data              map[string]json.RawMessage
	created, accessed time.Time
	principal         string
	lifetime          *backend.Lifetime
	expires           time.Time // under lifetime; zero without one or if never
	device            backend.Device
	prev              backend.ID // the predecessor's ID (see backend.OpRotate), zero if none
	rotated           time.Time  // when prev was rotated away
	renewal           bool       // the rotation kept the principal
}

// record returns the row as a Record stored under id, without its data.
func (row memoryRow) record(id backend.ID) backend.Record {
	return backend.Record{ID: id, SessionID: row.sessionID, Created: row.created, Accessed: row.accessed, Lifetime: row.lifetime, Device: row.device,
		Rotated: row.rotated, Renewal: row.renewal}
}

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{rows: make(map[backend.ID]memoryRow), prevs: make(map[backend.ID]backend.ID)}
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	row, ok := b.rows[id]
	predecessor := false
	if !ok && sid != (backend.SessionID{}) {
		// The key may be the predecessor of the session's current one.
		cur := b.prevs[id]
		row, ok = b.find(cur, sid)
		ok = ok && row.prev == id
		id, predecessor = cur, true
	}
	if !ok || (sid != backend.SessionID{} && row.sessionID != sid) {
		return nil, backend.ErrNotFound
	}
	rec := row.record(id)
	rec.Data, rec.Device, rec.Predecessor = maps.Clone(row.data), backend.Device{}, predecessor
	return &rec, nil
}

// Apply implements backend.Backend.
func (b *Backend) Apply(ctx context.Context, a backend.Action) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch a.Op {
	case backend.OpNone:
	case backend.OpInsert:
		if _, dup := b.find(a.New, a.SessionID); dup {
			return nil // this insert's earlier attempt: New is random
		}
		if _, ok := b.find(a.Old, a.OldSessionID); ok {
			b.remove(a.Old)
		}
		row := memoryRow{sessionID: a.SessionID, data: a.Patch.Apply(nil), created: a.Created, accessed: a.Accessed,
			principal: a.Principal, lifetime: a.Lifetime, expires: a.Expires}
		if a.Device != nil {
			row.device = *a.Device
		}
		b.rows[a.New] = row
	case backend.OpUpdate:
		row, ok := b.find(a.Old, a.OldSessionID)
		if !ok {
			return backend.ErrGone
		}
		row.data = a.Patch.Apply(row.data)
		row.accessed = laterOf(row.accessed, a.Accessed)
		if a.SetPrincipal {
			row.principal = a.Principal
		}
		if a.Lifetime != nil {
			row.lifetime, row.expires = a.Lifetime, a.Expires
		} else {
			row.expires = laterOf(row.expires, a.Expires)
		}
		b.rows[a.Old] = row
	case backend.OpRotate:
		row, ok := b.find(a.Old, a.OldSessionID)
		if !ok {
			if _, done := b.find(a.New, a.OldSessionID); done {
				return nil // this rotation's earlier attempt: New is random
			}
			return backend.ErrGone
		}
		b.remove(a.Old)
		row.prev, row.rotated, row.renewal = a.Old, a.Accessed, a.Renewal
		b.prevs[a.Old] = a.New
		if a.SetPrincipal {
			row.principal = a.Principal
		}
		if a.Lifetime != nil {
			row.lifetime = a.Lifetime
		}
		if a.Device != nil {
			row.device = *a.Device
		}
		row.data, row.created, row.accessed, row.expires = a.Patch.Apply(row.data), a.Created, a.Accessed, a.Expires
		b.rows[a.New] = row
	case backend.OpDelete:
		if _, ok := b.find(a.Old, a.OldSessionID); ok {
			b.remove(a.Old)
		}
	default:
		return fmt.Errorf("pgsession: unknown operation %d", a.Op)
	}
	return nil
}

// find returns the row under id if its SessionID is sid. b.mu must be held.
func (b *Backend) find(id backend.ID, sid backend.SessionID) (memoryRow, bool) {
	row, ok := b.rows[id]
	return row, ok && row.sessionID == sid
}

// remove deletes the row under id, and its predecessor's entry. b.mu must
// be held.
func (b *Backend) remove(id backend.ID) {
	if row, ok := b.rows[id]; ok && b.prevs[row.prev] == id {
		delete(b.prevs, row.prev)
	}
	delete(b.rows, id)
}

// DeleteExpired implements backend.Backend.
func (b *Backend) DeleteExpired(ctx context.Context, c backend.Cutoffs, limit int) (int, error) {
	return b.deleteWhere(ctx, limit, func(row memoryRow) bool {
		return expired(c, row.created, row.accessed, row.expires, row.lifetime != nil)
	})
}

// deleteWhere removes at most limit rows for which match is true.
func (b *Backend) deleteWhere(ctx context.Context, limit int, match func(memoryRow) bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id, row := range b.rows {
		if n >= limit {
			break
		}
		if match(row) {
			b.remove(id)
			n++
		}
	}
	return n, nil
}

// DeleteByPrincipal implements backend.PrincipalBackend.
func (b *Backend) DeleteByPrincipal(ctx context.Context, principal string, only, except backend.SessionID) (int, error) {
	return b.deleteWhere(ctx, math.MaxInt, func(row memoryRow) bool {
		return principal != "" && row.principal == principal &&
			(only == backend.SessionID{} || row.sessionID == only) && (except == backend.SessionID{} || row.sessionID != except)
	})
}

// ListByPrincipal implements backend.PrincipalBackend.
func (b *Backend) ListByPrincipal(ctx context.Context, principal string) ([]backend.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []backend.Record
	for id, row := range b.rows {
		if row.principal == principal && principal != "" {
			out = append(out, row.record(id))
		}
	}
	slices.SortFunc(out, func(a, b backend.Record) int { return b.Accessed.Compare(a.Accessed) })
	return out, nil
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// expired reports whether a row with these fields is past the cutoffs c.
func expired(c backend.Cutoffs, created, accessed, expires time.Time, own bool) bool {
	if own {
		return !expires.IsZero() && expires.Before(c.Now)
	}
	return accessed.Before(c.IdleBefore) || created.Before(c.CreatedBefore)
}
