package pgsession

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/sessiondata"
)

var (
	// ErrNoSession is returned by RotateKey, FreezeSession and Token when the
	// context does not come from a request inside Manager.Middleware, and by
	// the methods of the nil *Session that FromContext then returns.
	// ErrNoSession is also returned by Manager.Save when ctx carries no
	// session that the Manager's Load put there.
	ErrNoSession = errors.New("pgsession: no session in context (is the handler wrapped by Manager.Middleware, or the context from Manager.Load?)")
	// ErrAlreadySaved is returned by Set, Delete, Clear, Pop, RotateKey and
	// FreezeSession once the response has started and the session has been
	// saved (or, for a request that had ended by then, discarded; see
	// Manager.Middleware), or once Manager.Save has saved a session from
	// Manager.Load: the change would otherwise be lost silently. Manager.Save
	// returns it for a session it saved before.
	ErrAlreadySaved = errors.New("pgsession: session already saved (the response has started)")
	// ErrTooLarge is returned by Set when the session's data would exceed
	// Config.MaxDataSize. The session is left unchanged.
	ErrTooLarge = errors.New("pgsession: session data too large")
	// ErrStaleKey is the error of a save, wrapped (the ErrorHandler's
	// error, or Manager.Save's), whose request changed the session's data
	// but could not store the change because another request changed the
	// session's key first: the request came with a key that a login or
	// logout retired (which reads and writes nothing, so that it gains no
	// power from the new session), or with one older than the immediate
	// predecessor of a renewed key, or it loaded the session before a
	// logout deleted it. Nothing is stored and no cookie is sent, so the
	// client keeps the session the other request left it; the default
	// ErrorHandler answers 409 Conflict, and the client may retry. A
	// request that changed no data is never refused. See
	// Config.RotationGrace.
	ErrStaleKey = errors.New("pgsession: the session's key was changed by a concurrent request (login, logout or renewal); this request's change was not saved")
	// ErrInvalidValue is returned by Set for a key or value that cannot be
	// stored: a key that is not valid UTF-8, a value that cannot be encoded as
	// JSON, or one that contains a NUL character (PostgreSQL's jsonb rejects
	// \u0000).
	ErrInvalidValue = errors.New("pgsession: invalid session value")
)

// Session is one request's view of a session: the data that was loaded plus
// the changes the handler made. Obtain it with FromContext. Its methods are
// safe for concurrent use by the goroutines serving one request. Called on
// the nil *Session that FromContext returns outside the middleware, they
// return ErrNoSession instead of panicking.
//
// Values are stored as JSON: Set encodes with encoding/json and Get decodes
// into the given pointer, so a value reads back as JSON would round-trip it
// (numbers into an interface{} become float64, for example).
type Session struct {
	m   *Manager
	now time.Time // the request's clock reading, used for load and save

	loaded *backend.Record // the row loaded (possibly expired), or nil
	bearer bool            // the key came in an Authorization header, not a cookie
	hook   bool            // the middleware saves it when the response starts (else Manager.Save does)
	token  string          // the signed token Manager.Load was given, when it named a live session
	outer  *Session        // the session the context carried before this one was added, or nil

	mu      sync.Mutex
	key     []byte                     // the key of the stored row, nil if none
	sid     SessionID                  // the SessionID of the stored row, with key
	signed  string                     // the request's cookie value for key, if signed with the current hash key
	newKey  []byte                     // the key a new or rotated row will get, once chosen
	data    map[string]json.RawMessage // current view; shared with loaded.Data until owned
	owned   bool                       // data is a private copy
	size    int                        // approximate JSON size of data, -1 until counted (see dataSize)
	dirty   map[string]struct{}        // keys changed by this request
	cleared bool
	rotate  bool
	freeze  bool
	saved   bool

	lifetime  *Lifetime     // set by SetLifetime (resolved), or nil
	sessionID SessionID     // the lasting name of a session this request creates, once chosen
	req       *http.Request // the request, for Config.Device; nil outside the middleware

	deadline  time.Time // earliest deadline of a context the handler used, or zero
	discarded bool      // the request ended before the save: nothing was saved
	dead      bool      // every key the request presented names no session

	ev backend.Event // what happened, for the Backend's Observer (see Manager.observe)
}

// FromContext returns the session of the request whose context is ctx, or
// nil when ctx does not come from a request inside Manager.Middleware or
// from Manager.Load. When several Managers serve the request, it returns
// the innermost one's session (the one added last); Manager.FromContext
// returns a given Manager's.
func FromContext(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	if s != nil {
		s.observe(ctx) // a deadline the handler runs under (see timeout.go)
	}
	return s
}

type sessionKey struct{}

// Get decodes the value stored under key into dst, which must be a pointer.
// It reports false (and leaves dst untouched) when the key is absent, and an
// error wrapping the JSON error when the stored value does not fit dst.
func (s *Session) Get(key string, dst any) (bool, error) {
	if s == nil {
		return false, ErrNoSession
	}
	s.mu.Lock()
	raw, ok := s.data[key]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := sessiondata.DecodeValue(raw, dst); err != nil {
		return true, fmt.Errorf("pgsession: Get %q: %w", key, err)
	}
	return true, nil
}

// Set stores value, encoded as JSON, under key. Setting a value equal to the
// stored one is not a change and costs no write. Set returns ErrInvalidValue
// for values that cannot be stored, ErrTooLarge when the data would exceed
// Config.MaxDataSize, and ErrAlreadySaved once the response has started; in
// every error case the session is unchanged.
func (s *Session) Set(key string, value any) error {
	if s == nil {
		return ErrNoSession
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidValue, key)
	}
	raw, err := sessiondata.EncodeValue(value)
	if err != nil {
		return fmt.Errorf("%w: Set %q: %w", ErrInvalidValue, key, err)
	}
	if hasNUL(raw) || strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("%w: Set %q: contains a NUL character", ErrInvalidValue, key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutable("Set"); err != nil {
		return err
	}
	old, had := s.data[key]
	if had && sessiondata.JSONEqual(old, raw) {
		return nil
	}
	size := s.dataSize() + entrySize(key, raw)
	if had {
		size -= entrySize(key, old)
	}
	if size > s.m.cfg.MaxDataSize {
		return fmt.Errorf("%w: Set %q would make it %d bytes, limit %d", ErrTooLarge, key, size, s.m.cfg.MaxDataSize)
	}
	s.own()
	s.data[key] = raw
	s.size = size
	s.markDirty(key)
	return nil
}

// Delete removes key. Deleting an absent key is not a change. It returns
// ErrAlreadySaved once the response has started.
func (s *Session) Delete(key string) error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutable("Delete"); err != nil {
		return err
	}
	if old, ok := s.data[key]; ok {
		s.size = s.dataSize() - entrySize(key, old)
		s.own()
		delete(s.data, key)
		s.markDirty(key)
	}
	return nil
}

// Clear removes every key. A session left empty is deleted from the store
// and its cookie expired. It returns ErrAlreadySaved once the response has
// started.
func (s *Session) Clear() error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutable("Clear"); err != nil {
		return err
	}
	s.cleared = true
	s.data, s.dirty, s.size, s.owned = nil, nil, 0, false
	return nil
}

// dataSize returns the approximate JSON size of s.data (the sum of
// entrySize), counting it at the first call after the load: a request that
// changes nothing never counts it. s.mu must be held.
func (s *Session) dataSize() int {
	if s.size < 0 {
		s.size = 0
		for k, v := range s.data {
			s.size += entrySize(k, v)
		}
	}
	return s.size
}

// own gives the session a private, writable copy of its data, leaving the
// loaded record intact for the policy's comparisons. s.mu must be held.
func (s *Session) own() {
	if !s.owned {
		s.data = maps.Clone(s.data)
		if s.data == nil {
			s.data = make(map[string]json.RawMessage)
		}
		s.owned = true
	}
}

// Pop decodes the value stored under key into dst, like Get, and removes
// the key, so the value is read once: the removal is saved with the rest of
// the request's changes (a session left empty is deleted). It is meant for
// flash messages, which a request stores and the next one shows. Popping an
// absent key reports false, leaves dst untouched and changes nothing, so it
// costs no write. Get and Delete happen under the session's lock, so of two
// goroutines of one request popping the same key only one gets the value;
// dst's UnmarshalJSON, if any, must not use the session.
//
// When the stored value does not fit dst, Pop returns true and an error
// wrapping the JSON error and leaves the key in place. Like Delete, it
// returns ErrAlreadySaved once the session has been saved.
func (s *Session) Pop(key string, dst any) (bool, error) {
	if s == nil {
		return false, ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutable("Pop"); err != nil {
		return false, err
	}
	raw, ok := s.data[key]
	if !ok {
		return false, nil
	}
	if err := sessiondata.DecodeValue(raw, dst); err != nil {
		return true, fmt.Errorf("pgsession: Pop %q: %w", key, err)
	}
	s.size = s.dataSize() - entrySize(key, raw)
	s.own()
	delete(s.data, key)
	s.markDirty(key)
	return true, nil
}

// Has reports whether the session holds key (false for a nil Session).
func (s *Session) Has(key string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.data[key]
	return ok
}

// Keys returns the session's keys in sorted order, as the handler sees them
// now (with this request's changes); nil for an empty or nil Session.
func (s *Session) Keys() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.data) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(s.data))
}

// Len returns the number of keys in the session (0 for a nil Session).
func (s *Session) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

func (s *Session) markDirty(key string) {
	if s.dirty == nil {
		s.dirty = make(map[string]struct{})
	}
	s.dirty[key] = struct{}{}
}

// mutable returns ErrAlreadySaved, and logs the misuse, once the session has
// been saved. s.mu must be held.
func (s *Session) mutable(op string) error {
	if !s.saved {
		return nil
	}
	if s.discarded { // a timed-out handler still running: expected, not misuse
		s.m.cfg.Logger.Debug("pgsession: change after the request ended is not saved", "op", op)
		return fmt.Errorf("%s: %w", op, ErrAlreadySaved)
	}
	if !s.hook {
		s.m.cfg.Logger.Error("pgsession: change after Manager.Save is not saved", "op", op)
		return fmt.Errorf("%s: %w", op, ErrAlreadySaved)
	}
	s.m.cfg.Logger.Error("pgsession: change after the response started is not saved", "op", op)
	return fmt.Errorf("%s: %w", op, ErrAlreadySaved)
}

// seal marks the session saved and returns the request's change. Later
// mutations fail with ErrAlreadySaved. It reports false if it was sealed
// already.
func (s *Session) seal() (change, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved {
		return change{}, false
	}
	s.saved = true
	c := change{data: s.data, rotate: s.rotate, freeze: s.freeze, lifetime: s.lifetime, dead: s.dead, renewable: s.renewable(),
		resign: s.key != nil && s.signed == ""}
	c.patch.Replace = s.cleared
	if s.cleared {
		c.patch.Set = s.data
		return c, true
	}
	for k := range s.dirty {
		if v, ok := s.data[k]; ok {
			if c.patch.Set == nil {
				c.patch.Set = make(map[string]json.RawMessage, len(s.dirty))
			}
			c.patch.Set[k] = v
		} else {
			c.patch.Delete = append(c.patch.Delete, k)
		}
	}
	return c, true
}

// renewable reports whether a new key reaches the client by itself: in
// the session cookie the middleware sets (see policy.renewalDue).
func (s *Session) renewable() bool { return s.hook && !s.bearer && s.m.cfg.Carrier.cookies() }

// sessionIDLocked returns the lasting name of the session: the stored one
// of a live session, else the one a new row will get, chosen on first use.
// s.mu must be held.
func (s *Session) sessionIDLocked() SessionID {
	if s.key != nil {
		return s.sid
	}
	if s.sessionID == (SessionID{}) {
		s.sessionID = newSessionID()
	}
	return s.sessionID
}

// hasNUL reports whether JSON text raw encodes a NUL character: an escape
// \u0000 that is not itself an escaped backslash followed by "u0000".
func hasNUL(raw []byte) bool {
	for i := 0; ; {
		j := bytes.Index(raw[i:], []byte(`\u0000`))
		if j < 0 {
			return false
		}
		j += i
		backslashes := 0
		for k := j - 1; k >= 0 && raw[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return true
		}
		i = j + 1
	}
}

// entrySize approximates the bytes key and value add to a JSON object.
func entrySize(key string, value json.RawMessage) int { return len(key) + len(value) + 4 }
