package pgsession

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// MemoryBackend keeps sessions in process memory, with the same semantics as
// the PostgreSQL backend (it passes the same conformance tests). Use it for
// development and tests: sessions are lost when the process exits and are
// not shared between processes. It is safe for concurrent use. The zero
// value is not usable; call NewMemoryBackend.
type MemoryBackend struct {
	mu   sync.Mutex
	rows map[ID]memoryRow
}

type memoryRow struct {
	sessionID         SessionID
	data              map[string]json.RawMessage
	created, accessed time.Time
	principal         string
	lifetime          *Lifetime
	expires           time.Time // under lifetime; zero without one or if never
	device            Device
}

// record returns the row as a Record stored under id, without its data.
func (row memoryRow) record(id ID) Record {
	return Record{ID: id, SessionID: row.sessionID, Created: row.created, Accessed: row.accessed, Lifetime: row.lifetime, Device: row.device}
}

// NewMemoryBackend returns an empty in-memory backend.
func NewMemoryBackend() *MemoryBackend {
	return &MemoryBackend{rows: make(map[ID]memoryRow)}
}

// Load implements Backend.
func (b *MemoryBackend) Load(ctx context.Context, id ID, sid SessionID) (*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	row, ok := b.rows[id]
	if !ok || (sid != SessionID{} && row.sessionID != sid) {
		return nil, ErrNotFound
	}
	rec := row.record(id)
	rec.Data, rec.Device = maps.Clone(row.data), Device{}
	return &rec, nil
}

// Apply implements Backend.
func (b *MemoryBackend) Apply(ctx context.Context, a Action) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch a.Op {
	case OpNone:
	case OpInsert:
		if _, dup := b.find(a.New, a.SessionID); dup {
			return nil // this insert's earlier attempt: New is random
		}
		if _, ok := b.find(a.Old, a.OldSessionID); ok {
			delete(b.rows, a.Old)
		}
		row := memoryRow{sessionID: a.SessionID, data: a.Patch.applyTo(nil), created: a.Created, accessed: a.Accessed,
			principal: a.Principal, lifetime: a.Lifetime, expires: a.Expires}
		if a.Device != nil {
			row.device = *a.Device
		}
		b.rows[a.New] = row
	case OpUpdate:
		row, ok := b.find(a.Old, a.OldSessionID)
		if !ok {
			return ErrGone
		}
		row.data = a.Patch.applyTo(row.data)
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
	case OpRotate:
		row, ok := b.find(a.Old, a.OldSessionID)
		if !ok {
			if _, done := b.find(a.New, a.OldSessionID); done {
				return nil // this rotation's earlier attempt: New is random
			}
			return ErrGone
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
		row.data, row.created, row.accessed, row.expires = a.Patch.applyTo(row.data), a.Created, a.Accessed, a.Expires
		b.rows[a.New] = row
	case OpDelete:
		if _, ok := b.find(a.Old, a.OldSessionID); ok {
			delete(b.rows, a.Old)
		}
	default:
		return fmt.Errorf("pgsession: unknown operation %d", a.Op)
	}
	return nil
}

// find returns the row under id if its SessionID is sid. b.mu must be held.
func (b *MemoryBackend) find(id ID, sid SessionID) (memoryRow, bool) {
	row, ok := b.rows[id]
	return row, ok && row.sessionID == sid
}

// DeleteExpired implements Backend.
func (b *MemoryBackend) DeleteExpired(ctx context.Context, c Cutoffs, limit int) (int, error) {
	return b.deleteWhere(ctx, limit, func(row memoryRow) bool {
		return c.expired(row.created, row.accessed, row.expires, row.lifetime != nil)
	})
}

// deleteWhere removes at most limit rows for which match is true.
func (b *MemoryBackend) deleteWhere(ctx context.Context, limit int, match func(memoryRow) bool) (int, error) {
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

// DeleteByPrincipal implements PrincipalBackend.
func (b *MemoryBackend) DeleteByPrincipal(ctx context.Context, principal string, only, except SessionID) (int, error) {
	return b.deleteWhere(ctx, math.MaxInt, func(row memoryRow) bool {
		return principal != "" && row.principal == principal &&
			(only == SessionID{} || row.sessionID == only) && (except == SessionID{} || row.sessionID != except)
	})
}

// ListByPrincipal implements PrincipalBackend.
func (b *MemoryBackend) ListByPrincipal(ctx context.Context, principal string) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Record
	for id, row := range b.rows {
		if row.principal == principal && principal != "" {
			out = append(out, row.record(id))
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return b.Accessed.Compare(a.Accessed) })
	return out, nil
}

// applyTo returns a new map: data with p applied, as PostgreSQL's
// (data || set) - delete would compute it.
func (p Patch) applyTo(data map[string]json.RawMessage) map[string]json.RawMessage {
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
