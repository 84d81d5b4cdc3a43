package pgsession

import "context"

// FreezeSession makes the request whose context is ctx leave its session
// untouched: no database write, no delete and no Set-Cookie, whatever else
// the handler called (Set, Clear, RotateKey). The handler still sees its own
// changes for the rest of the request. Use it for health checks, assets and
// other responses that must not extend or alter a session.
//
// When several Managers serve the request (see Manager.FromContext),
// FreezeSession freezes the session of each: a response that must not alter
// a session must alter none.
//
// FreezeSession returns ErrNoSession when ctx carries no session (it does
// not come from a request inside Manager.Middleware or from Manager.Load),
// and ErrAlreadySaved, freezing none, once one of the sessions has been
// saved.
func FreezeSession(ctx context.Context) error {
	return update(ctx, "FreezeSession", func(s *Session) { s.freeze = true })
}
