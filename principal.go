package pgsession

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PrincipalBackend is implemented by backends that index sessions by
// principal (see Config.PrincipalKey). Both built-in backends do.
type PrincipalBackend interface {
	// DeleteByPrincipal removes every session of principal and returns how
	// many it removed.
	DeleteByPrincipal(ctx context.Context, principal string) (int, error)
	// ListByPrincipal returns the sessions of principal, most recently
	// accessed first, expired or not, with ID and timestamps but no Data.
	ListByPrincipal(ctx context.Context, principal string) ([]Record, error)
}

// ErrNoPrincipal is returned by DeleteByPrincipal and ListByPrincipal when
// Config.PrincipalKey is not set or the backend does not implement
// PrincipalBackend.
var ErrNoPrincipal = errors.New("pgsession: sessions have no principal (set Config.PrincipalKey and use a PrincipalBackend)")

// SessionInfo describes one live session of a principal. It never holds the
// session key: ID is the key's hash, safe to show or log.
type SessionInfo struct {
	ID         ID        // the SHA-256 hash of the session key, as stored; not a usable key
	Created    time.Time // when the session (or its current key) was created
	LastAccess time.Time // the last access written (lags by up to TimeoutResolution)
	Expires    time.Time // when it expires unless used again; zero if never
}

// DeleteByPrincipal logs principal out everywhere: it deletes every session
// whose PrincipalKey value equals principal (compared as the stored JSON
// value: a string, or a number such as a user ID) and returns how many it
// deleted. Requests already in flight with those sessions cannot bring them
// back. It returns ErrNoPrincipal when sessions have no principal.
func (m *Manager) DeleteByPrincipal(ctx context.Context, principal any) (int, error) {
	pb, p, err := m.principal(principal)
	if err != nil {
		return 0, err
	}
	n, err := pb.DeleteByPrincipal(ctx, p)
	if err != nil {
		return n, fmt.Errorf("pgsession: delete sessions of %q: %w", p, err)
	}
	m.stats.deletes.Add(uint64(n))
	return n, nil
}

// ListByPrincipal returns principal's live sessions, most recently used
// first, for a "your devices" page. It returns ErrNoPrincipal when sessions
// have no principal.
func (m *Manager) ListByPrincipal(ctx context.Context, principal any) ([]SessionInfo, error) {
	pb, p, err := m.principal(principal)
	if err != nil {
		return nil, err
	}
	recs, err := pb.ListByPrincipal(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("pgsession: list sessions of %q: %w", p, err)
	}
	now := m.cfg.Now()
	out := make([]SessionInfo, 0, len(recs))
	for i := range recs {
		r := &recs[i]
		if !m.p.expired(r, now) {
			out = append(out, SessionInfo{ID: r.ID, Created: r.Created, LastAccess: r.Accessed, Expires: m.p.expiry(r.Created, r.Accessed)})
		}
	}
	return out, nil
}

// principal returns the backend and the stored form of principal.
func (m *Manager) principal(principal any) (PrincipalBackend, string, error) {
	pb, ok := m.cfg.Backend.(PrincipalBackend)
	if !ok || m.p.principalKey == "" {
		return nil, "", ErrNoPrincipal
	}
	raw, err := json.Marshal(principal)
	if err != nil {
		return nil, "", fmt.Errorf("%w: principal: %w", ErrInvalidValue, err)
	}
	p := principalText(raw)
	if p == "" {
		return nil, "", fmt.Errorf("%w: empty principal", ErrInvalidValue)
	}
	return pb, p, nil
}
