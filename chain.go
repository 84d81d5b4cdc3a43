package pgsession

import (
	"context"
	"fmt"
	"strings"
)

// Several Managers may serve one request: nested middlewares (a long-lived
// preferences session beside a short login session, each with its own
// cookie), or several Manager.Load calls on one context. The context then
// carries a chain of sessions, innermost (added last) first; each links to
// the one the context carried before it. The package-level FromContext and
// Token use the innermost session, so an application with one Manager never
// notices the chain; Manager.FromContext finds a given Manager's session;
// RotateKey and FreezeSession act on every Manager's session at once.

// innermost returns the session added to ctx last, or nil.
func innermost(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// attach returns c, set to a context carrying s on top of ctx, with s
// linked to the sessions ctx carries. c is the caller's (the middleware's
// is part of its per-request allocation).
func attach(c *sessionContext, ctx context.Context, s *Session) context.Context {
	s.outer = innermost(ctx)
	*c = sessionContext{Context: ctx, s: s}
	return c
}

// sessionContext is context.WithValue(ctx, sessionKey{}, s), as a type of
// its own so that the middleware allocates it with its writer. The
// context package still sees through it to the cancellation of its
// parent (Value answers its lookups from the parent).
type sessionContext struct {
	context.Context
	s *Session
}

// Value returns the session for sessionKey{}, and what the parent holds for
// any other key.
func (c *sessionContext) Value(key any) any {
	if key == (sessionKey{}) {
		return c.s
	}
	return c.Context.Value(key)
}

// String describes the context, as the context package's own types do.
func (c *sessionContext) String() string {
	return fmt.Sprint(c.Context) + ".WithValue(pgsession.Session)"
}

// FromContext returns m's session in ctx: the one m's Middleware or Load
// added (the innermost, if both did), or nil if there is none. Use it when
// several Managers serve one request; the package-level FromContext returns
// the innermost session of any Manager.
func (m *Manager) FromContext(ctx context.Context) *Session {
	for s := innermost(ctx); s != nil; s = s.outer {
		if s.m == m {
			s.observe(ctx)
			return s
		}
	}
	return nil
}

// sessions returns the session of each Manager in ctx, innermost first, as
// Manager.FromContext would return it (a session hidden by a newer one of
// the same Manager is left out).
func sessions(ctx context.Context) []*Session {
	var out []*Session
outer:
	for s := innermost(ctx); s != nil; s = s.outer {
		for _, seen := range out {
			if seen.m == s.m {
				continue outer
			}
		}
		s.observe(ctx)
		out = append(out, s)
	}
	return out
}

// checkChain decides what m's middleware does with a request whose context
// is ctx. If ctx carries a session that m's own middleware added (the
// middleware wraps the handler twice: applied globally and again on a route
// group, say), it returns that session: the request passes through to the
// one the outer middleware loads and saves. It returns an error wrapping
// ErrInvalidConfig if ctx carries a session of m from Manager.Load, which
// the middleware would hide behind a second session of m's cookie, or one of
// a Manager whose cookie names clash with m's: the two middlewares would read
// and overwrite one cookie, each logging the other's users out. Names are
// compared ignoring case, like the cookie prefixes; a name signs the token
// too, so bearer tokens are covered.
func (m *Manager) checkChain(ctx context.Context) (*Session, error) {
	var own *Session
	for s := innermost(ctx); s != nil; s = s.outer {
		if s.m == m {
			if own == nil {
				own = s
			}
			continue
		}
		for _, a := range m.cfg.Cookie.names() {
			for _, b := range s.m.cfg.Cookie.names() {
				if strings.EqualFold(a, b) {
					return nil, configError("Cookie: two nested Managers use the cookie name %q; give each its own Cookie.Name and IndicatorName", a)
				}
			}
		}
	}
	if own != nil && !own.hook {
		return nil, configError("Manager.Middleware serves a request whose context carries a session of this Manager from Manager.Load; the two would share one cookie")
	}
	return own, nil
}

// names returns the cookie names c uses.
func (c CookieConfig) names() []string {
	if c.IndicatorName == "" {
		return []string{c.Name}
	}
	return []string{c.Name, c.IndicatorName}
}
