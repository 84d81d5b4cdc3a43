package pgsession

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// SessionID names a session for its whole life: unlike its key, it stays
// the same when the key rotates, so a device list can show it and
// DeleteSession can take it while the session keeps being used. It is not a
// secret and cannot load or act as the session. Its String method returns
// it in hexadecimal, the form ParseSessionID parses.
type SessionID = backend.SessionID

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

// ErrNoPrincipal is returned by DeleteByPrincipal, DeleteSession,
// DeleteOtherSessions and ListByPrincipal when Config.PrincipalKey is not
// set or the backend does not implement PrincipalBackend, and by
// DeleteOtherSessions when the request's session has no principal.
var ErrNoPrincipal = errors.New("pgsession: sessions have no principal (set Config.PrincipalKey and use a PrincipalBackend)")

// Device describes the client of a session (its User-Agent header and its
// address, as Config.Device reports them) when the session was created or
// its key last rotated, so that a user can recognise their sessions on a
// "your devices" page. It is personal data: record it only to show it, and
// say so in your privacy notice.
type Device = backend.Device

// maxDeviceField bounds each Device field as stored, in bytes.
const maxDeviceField = 256

// cleanDevice returns d as stored: valid UTF-8 without NUL, each field at
// most maxDeviceField bytes.
func cleanDevice(d Device) Device {
	f := func(s string) string {
		s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
		for len(s) > maxDeviceField {
			s = strings.ToValidUTF8(s[:maxDeviceField], "")
		}
		return s
	}
	return Device{UserAgent: f(d.UserAgent), Addr: f(d.Addr)}
}

// DeviceFromRequest returns a Config.Device function that records the
// User-Agent header and the address addr(r) returns (nil: none). For
// example, with the connection's peer address:
//
//	Device: pgsession.DeviceFromRequest(func(r *http.Request) string { return r.RemoteAddr })
func DeviceFromRequest(addr func(r *http.Request) string) func(r *http.Request) Device {
	return func(r *http.Request) Device {
		d := Device{UserAgent: r.UserAgent()}
		if addr != nil {
			d.Addr = addr(r)
		}
		return d
	}
}

// SessionInfo describes one live session of a principal, for a "your
// devices" page. It never holds the session key.
type SessionInfo struct {
	ID         SessionID // the session's lasting name: show it, and pass it to DeleteSession
	Created    time.Time // when the session (or its current key) was created
	LastAccess time.Time // the last access written (lags by up to TimeoutResolution)
	Expires    time.Time // when it expires unless used again; zero if never
	Device     Device    // the client, if Config.Device records it
	Current    bool      // it is the session of the context ListByPrincipal was called with
}

// DeleteByPrincipal logs principal out everywhere: it deletes every session
// whose PrincipalKey value equals principal (compared as the stored JSON
// value: a string, or a number such as a user ID) and returns how many it
// deleted. Requests already in flight with those sessions cannot bring them
// back, nor can concurrent key rotations. It returns ErrNoPrincipal when
// sessions have no principal.
func (m *Manager) DeleteByPrincipal(ctx context.Context, principal any) (int, error) {
	return m.deleteByPrincipal(ctx, principal, SessionID{}, SessionID{})
}

// DeleteSession signs out one device: it deletes the session named id if,
// and only if, it belongs to principal (so a user cannot end another user's
// session by guessing IDs), and reports whether it did. It carries the
// guarantees of DeleteByPrincipal. It returns ErrNoPrincipal when sessions
// have no principal.
func (m *Manager) DeleteSession(ctx context.Context, principal any, id SessionID) (bool, error) {
	if id == (SessionID{}) {
		return false, fmt.Errorf("%w: zero SessionID", ErrInvalidValue)
	}
	n, err := m.deleteByPrincipal(ctx, principal, id, SessionID{})
	return n > 0, err
}

// DeleteOtherSessions signs out all other devices: it deletes every session
// of the principal of the session in ctx (from Middleware or Manager.Load)
// except that session itself, and returns how many it deleted. It carries
// the guarantees of DeleteByPrincipal. It returns ErrNoSession without a
// session in ctx, and ErrNoPrincipal when sessions have no principal or
// this one has none (nobody is logged in).
func (m *Manager) DeleteOtherSessions(ctx context.Context) (int, error) {
	s := m.FromContext(ctx)
	if s == nil {
		return 0, ErrNoSession
	}
	s.mu.Lock()
	p := principalText(s.data[m.p.principalKey])
	keep := s.sessionIDLocked()
	s.mu.Unlock()
	if m.p.principalKey == "" || p == "" {
		return 0, ErrNoPrincipal
	}
	return m.deleteByPrincipal(ctx, p, SessionID{}, keep)
}

// deleteByPrincipal runs PrincipalBackend.DeleteByPrincipal for principal.
func (m *Manager) deleteByPrincipal(ctx context.Context, principal any, only, except SessionID) (int, error) {
	pb, p, err := m.principal(principal)
	if err != nil {
		return 0, err
	}
	n, err := pb.DeleteByPrincipal(ctx, p, only, except)
	if err != nil {
		return n, fmt.Errorf("pgsession: delete sessions of %q: %w", p, err)
	}
	m.stats.deletes.Add(uint64(n))
	return n, nil
}

// ListByPrincipal returns principal's live sessions, most recently used
// first, for a "your devices" page; the session of ctx (if any) is marked
// Current. It returns ErrNoPrincipal when sessions have no principal.
func (m *Manager) ListByPrincipal(ctx context.Context, principal any) ([]SessionInfo, error) {
	pb, p, err := m.principal(principal)
	if err != nil {
		return nil, err
	}
	recs, err := pb.ListByPrincipal(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("pgsession: list sessions of %q: %w", p, err)
	}
	var current SessionID
	if s := m.FromContext(ctx); s != nil {
		s.mu.Lock()
		if s.key != nil { // a live, stored session
			current = s.sid
		}
		s.mu.Unlock()
	}
	now := m.cfg.Now()
	out := make([]SessionInfo, 0, len(recs))
	for i := range recs {
		r := &recs[i]
		if !m.p.expired(r, now) {
			out = append(out, SessionInfo{ID: r.SessionID, Created: r.Created, LastAccess: r.Accessed,
				Expires: m.p.expiry(r.Lifetime, r.Created, r.Accessed), Device: r.Device,
				Current: current != SessionID{} && r.SessionID == current})
		}
	}
	return out, nil
}

// principal returns the backend and the stored form of principal (a value
// as stored under PrincipalKey, or its stored form already).
func (m *Manager) principal(principal any) (backend.PrincipalBackend, string, error) {
	pb, ok := m.cfg.Backend.(backend.PrincipalBackend)
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
