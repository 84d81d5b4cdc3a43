package pgsession

import (
	"context"
	"log/slog"
	"time"
)

// A request whose context has ended when its session would be saved saves
// nothing: no database write and no Set-Cookie. This covers a client that
// disconnected, an http.TimeoutHandler outside the middleware (the handler's
// context is the timed-out one), and one inside it: there the middleware's
// own context is still live, so the session also remembers the earliest
// deadline of the contexts the handler reached it through (FromContext,
// RotateKey, FreezeSession, Token), and a save at or after that deadline is
// treated as timed out.

// observe records ctx's deadline, if it has one, as a bound on this request.
// A session from Manager.Load has no request: only the context given to
// Save counts, so a shorter deadline a job used along the way does not.
func (s *Session) observe(ctx context.Context) {
	if !s.hook {
		return
	}
	d, ok := ctx.Deadline()
	if !ok {
		return
	}
	s.mu.Lock()
	if s.deadline.IsZero() || d.Before(s.deadline) {
		s.deadline = d
	}
	s.mu.Unlock()
}

// ended returns why the request of s is over, with ctx the middleware's
// request context, or nil while it is live.
func (s *Session) ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.deadline.IsZero() && !time.Now().Before(s.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// endedError is save's answer when the request or job had ended: nothing
// was saved. It wraps the reason (context.Canceled or
// context.DeadlineExceeded).
type endedError struct{ reason error }

func (e endedError) Error() string {
	return "pgsession: the context ended before the session was saved; nothing is saved: " + e.reason.Error()
}

func (e endedError) Unwrap() error { return e.reason }

// discardEnded returns an endedError if the request of s has ended (see
// ended); it then marks the sealed change c discarded and logs it: at Info
// when the request had changes that are now lost, else at Debug.
func (m *Manager) discardEnded(ctx context.Context, s *Session, c change) error {
	err := s.ended(ctx)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	s.discarded = true
	s.mu.Unlock()
	level := slog.LevelDebug
	if !c.freeze && (c.rotate || !c.patch.IsEmpty()) {
		level = slog.LevelInfo
	}
	m.cfg.Logger.Log(ctx, level, "pgsession: the request ended (timed out or the client went away) before its session was saved; nothing is saved",
		"reason", err)
	return endedError{err}
}
