package pgsession

import (
	"context"

	"github.com/pgsession/pgsession/backend"
)

// Lifetime is a session's own expiry, chosen per session with SetLifetime:
// "remember me" at login, a shorter lifetime for an administrator, a longer
// one for a mobile app's token. It is stored with the session, so the server
// enforces it, and a key rotation keeps it. Its fields: IdleTimeout and
// AbsoluteTimeout (zero means Config's, negative none) and Persistent (the
// cookie survives a browser restart, even with CookieConfig.SessionOnly).
type Lifetime = backend.Lifetime

// SetLifetime gives the session of the request whose context is ctx its own
// lifetime l, from this request on: the timeouts it names replace Config's
// for this session only, and the cookie persists or not as l says. It is
// saved with the session (a request that changes nothing else still writes
// it), kept by later requests and by key rotation, and replaced by the next
// SetLifetime. Call it at login, with RotateKey.
//
// SetLifetime returns ErrNoSession when ctx does not come from a request
// inside Manager.Middleware, and ErrAlreadySaved once the response has
// started.
func SetLifetime(ctx context.Context, l Lifetime) error {
	return update(ctx, "SetLifetime", func(s *Session) {
		r := s.m.p.resolveLifetime(l)
		s.lifetime = &r
	})
}
