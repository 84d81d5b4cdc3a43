package pgsession

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgsession/pgsession/backend"
)

// Load returns a context carrying the session whose signed token is given,
// for code that runs outside Manager.Middleware's response: a WebSocket
// connection, a gRPC or Connect service, a background job. The token has the
// format of the session cookie's value and of a bearer token (see Token);
// "" starts a new, empty session. FromContext, Manager.FromContext, Token,
// RotateKey and FreezeSession work on the returned context as they do in a
// handler, and Save stores the session.
//
// The session is loaded by the middleware's rules: a token that does not
// verify with Config.HashKeys yields an empty session without a database
// query, and so does one whose session is unknown or expired (its row is
// deleted when the session is saved). Only a backend failure is an error;
// Load then returns ctx unchanged.
//
// The returned context keeps the sessions ctx carries (see
// Manager.FromContext); a session of m that ctx carries is hidden by the new
// one. Unlike in a handler, a deadline of a context derived from the
// returned one does not bound the session: only the context given to Save
// counts.
func (m *Manager) Load(ctx context.Context, token string) (context.Context, error) {
	var keys []credential
	current := false
	if token != "" {
		if c, cur, ok := m.signer.decodeCurrent(token); ok {
			keys, current = []credential{c}, cur
		}
	}
	s := new(Session)
	if err := m.load(ctx, s, keys, ""); err != nil {
		m.observe(ctx, s, err)
		return ctx, err
	}
	if s.key != nil && current {
		s.token = token
	}
	return attach(new(sessionContext), ctx, s), nil
}

// Save stores m's session in ctx, which Load put there, by the rules the
// middleware applies when a response starts: the timeouts and
// TimeoutResolution, RotateKey, FreezeSession, and deletion of a session
// left empty. It returns the token the client holds from now on: the one
// given to Load when the session keeps its key (whether or not anything was
// written; re-signed when it was signed with an older hash key or is of the
// form before tokens carried the session ID), a new one when the session
// was created or its key rotated, and
// "" when the session is empty or was deleted, or when a concurrent logout or
// rotation deleted it first and this job changed no data (which is not an
// error: its key stays dead). A job that changed data then gets an error
// wrapping ErrStaleKey instead, having stored nothing (see
// Config.RotationGrace); after a concurrent renewal its change is stored
// and the token it was given stays valid for the grace window.
// After a RotateKey the old token is dead, so the client must get the new
// one.
//
// A session is saved once: a second Save, like a change after the first,
// returns ErrAlreadySaved. Save returns ErrNoSession when ctx carries no
// session of m from Load (the middleware saves its own sessions when the
// response starts), an error wrapping ctx's error, having saved nothing,
// when ctx has ended, and an error wrapping the backend's when the write
// fails; the session is not saved then, and a new Load reads what is stored.
func (m *Manager) Save(ctx context.Context) (token string, err error) {
	s := m.FromContext(ctx)
	if s == nil {
		return "", ErrNoSession
	}
	if s.hook {
		return "", fmt.Errorf("pgsession: Save: the session in ctx comes from Manager.Middleware, which saves it when the response starts: %w", ErrNoSession)
	}
	if err := m.save(ctx, s, nil); err != nil {
		if errors.Is(err, ErrAlreadySaved) {
			return "", fmt.Errorf("pgsession: Save: %w", err)
		}
		return "", err
	}
	s.mu.Lock()
	key, sid := s.key, s.sid
	s.mu.Unlock()
	switch {
	case key == nil:
		return "", nil
	case s.token != "" && idOf(key) == s.loaded.ID:
		return s.token, nil
	}
	return m.signer.encode(sid, key, backend.ID{}), nil
}
