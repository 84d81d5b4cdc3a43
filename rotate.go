package pgsession

import "context"

// RotateKey moves the session of the request whose context is ctx to a fresh
// random key when the session is saved. Call it on every change of
// authentication, login and logout alike: the data (with this request's
// changes) moves to the new key, the session's creation time restarts (login
// is re-authentication, so the absolute timeout starts over), the old key is
// deleted in the same transaction and can never be used again, and the
// response carries the new cookie. Rotating a session that ends up empty just
// deletes it.
//
// RotateKey returns ErrNoSession when ctx does not come from a request inside
// Manager.Middleware, and ErrAlreadySaved once the response has started.
func RotateKey(ctx context.Context) error {
	return update(ctx, "RotateKey", func(s *Session) { s.rotate = true })
}

// update applies f to the session in ctx under its lock, unless the session is
// missing or already saved.
func update(ctx context.Context, op string, f func(*Session)) error {
	s := FromContext(ctx)
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mutable(op); err != nil {
		return err
	}
	f(s)
	return nil
}
