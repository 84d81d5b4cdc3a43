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
}

type memoryRow struct {
	sessionID         backend.SessionID
	data              map[string]json.RawMessage
	created, accessed time.Time
	principal         string
	lifetime          *backend.Lifetime
	expires           time.Time // under lifetime; zero without one or if never
	device            backend.Device
}

// record returns the row as a Record stored under id, without its data.
func (row memoryRow) record(id backend.ID) backend.Record {
	return backend.Record{ID: id, SessionID: row.sessionID, Created: row.created, Accessed: row.accessed, Lifetime: row.lifetime, Device: row.device}
}

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{rows: make(map[backend.ID]memoryRow)}
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	row, ok := b.rows[id]
	if !ok || (sid != backend.SessionID{} && row.sessionID != sid) {
		return nil, backend.ErrNotFound
	}
	rec := row.record(id)
	rec.Data, rec.Device = maps.Clone(row.data), backend.Device{}
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
			delete(b.rows, a.Old)
		}
		row := memoryRow{sessionID: a.SessionID, data: applyPatch(a.Patch, nil), created: a.Created, accessed: a.Accessed,
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
		row.data = applyPatch(a.Patch, row.data)
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
		delete(b.rows, a.Old)
		if a.SetPrincipal {
			row.principal = a.Principal
		}
		if a.Lifetime != nil {
			row.lifetime = a.Lifetime
		}
		if a.Device != nil {
			row.device = *a.Device
		}
		row.data, row.created, row.accessed, row.expires = applyPatch(a.Patch, row.data), a.Created, a.Accessed, a.Expires
		b.rows[a.New] = row
	case backend.OpDelete:
		if _, ok := b.find(a.Old, a.OldSessionID); ok {
			delete(b.rows, a.Old)
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
			delete(b.rows, id)
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

// applyPatch returns a new map: data with p applied, as PostgreSQL's
// (data || set) - delete would compute it.
func applyPatch(p backend.Patch, data map[string]json.RawMessage) map[string]json.RawMessage {
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
