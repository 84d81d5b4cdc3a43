package pgsession

import "context"

// RotateKey moves the session of the request whose context is ctx to a fresh
// random key when the session is saved. Call it on every change of
// authentication, login and logout alike: the data (with this request's
// changes) moves to the new key, the session's creation time restarts (login
// is re-authentication, so the absolute timeout starts over), the old key is
// retired in the same statement and never names the session again, and the
// response carries the new cookie (Manager.Save returns the new token). For
// Config.RotationGrace the client's requests still in flight with the old
// key are recognised: served the session after a renewal (the PrincipalKey
// value unchanged), kept from it after a login or logout, and never given a
// cookie; see Config.RotationGrace.
// Rotating a session that ends up empty just deletes it.
//
// When several Managers serve the request (see Manager.FromContext),
// RotateKey rotates the session of each: a change of authentication must
// leave valid no key that an attacker may have seen or planted before it,
// and one call cannot forget one.
//
// RotateKey returns ErrNoSession when ctx carries no session (it does not
// come from a request inside Manager.Middleware or from Manager.Load), and
// ErrAlreadySaved, rotating none, once one of the sessions has been saved.
func RotateKey(ctx context.Context) error {
	return update(ctx, "RotateKey", func(s *Session) { s.rotate = true })
}

// update applies f to every Manager's session in ctx (see sessions) under
// their locks, unless there is none or one of them is already saved: then it
// changes none.
func update(ctx context.Context, op string, f func(*Session)) error {
	ss := sessions(ctx)
	if len(ss) == 0 {
		return ErrNoSession
	}
	// Always locked innermost first, and no other code holds two session
	// locks, so this cannot deadlock.
	for _, s := range ss {
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	for _, s := range ss {
		if err := s.mutable(op); err != nil {
			return err
		}
	}
	for _, s := range ss {
		f(s)
	}
	return nil
}
