package pgsession

import "context"

// FreezeSession makes the request whose context is ctx leave its session
// untouched: no database write, no delete and no Set-Cookie, whatever else
// the handler called (Set, Clear, RotateKey). The handler still sees its own
// changes for the rest of the request. Use it for health checks, assets and
// other responses that must not extend or alter a session.
//
// FreezeSession returns ErrNoSession when ctx does not come from a request
// inside Manager.Middleware, and ErrAlreadySaved once the response has
// started.
func FreezeSession(ctx context.Context) error {
	return update(ctx, "FreezeSession", func(s *Session) { s.freeze = true })
}
