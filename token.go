package pgsession

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/pgsession/pgsession/backend"
)

// ErrEmptySession is returned by Token when the session holds no data, so
// nothing is stored and no token would be valid.
var ErrEmptySession = errors.New("pgsession: session is empty, so it has no token")

// Token returns the signed session token of the request whose context is
// ctx, as the session will be stored after this request, for clients that
// send it back as "Authorization: Bearer <token>" (see Config.Carrier):
// typically written into a login response's body. Call it after the
// request's Set and RotateKey calls: for a new or rotating session it picks
// the new key now, and the save uses that key. The token is as secret as the
// session itself.
//
// Token returns ErrNoSession outside Manager.Middleware, ErrEmptySession
// when the session holds no data, and ErrStaleKey when the request came
// with a key that a concurrent rotation retired (see
// Config.RotationGrace): the client already holds the rotation's newer
// token, which a token of this request must not replace.
func Token(ctx context.Context) (string, error) {
	s := FromContext(ctx)
	if s == nil {
		return "", ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded != nil && s.key != nil && s.m.p.staleness(s.loaded, s.now) != current {
		return "", fmt.Errorf("pgsession: Token: %w", ErrStaleKey)
	}
	if len(s.data) == 0 {
		return "", ErrEmptySession
	}
	key := s.key
	if !s.saved && !s.freeze && (key == nil || s.rotate || s.m.p.rotationTriggered(s.loaded.Data, s.data) ||
		s.m.p.renewalDue(s.loaded, change{renewable: s.renewable()}, s.now)) {
		key = s.chooseNewKeyLocked()
	}
	if key == nil {
		return "", ErrEmptySession // a concurrent logout deleted it
	}
	// A rotation keeps the session ID; a new session gets the one its
	// insert will store.
	return s.m.signer.encode(s.sessionIDLocked(), key, backend.ID{}), nil
}

// chooseNewKey returns the key a new or rotated row gets, picking it on
// first use.
func (s *Session) chooseNewKey() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chooseNewKeyLocked()
}

func (s *Session) chooseNewKeyLocked() []byte {
	if s.newKey == nil {
		s.newKey = newKey()
	}
	return s.newKey
}

// setKey records the key and SessionID the session is stored under after
// the save (nil and zero when it was deleted or lost to a concurrent
// logout).
func (s *Session) setKey(key []byte, sid SessionID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key, s.sid = key, sid
}

// idOf returns the ID under which the session with the given key is stored:
// the SHA-256 hash of the key.
func idOf(key []byte) backend.ID { return sha256.Sum256(key) }
