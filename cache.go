package pgsession

import (
	"net/http"
	"slices"
	"strings"
)

// This file holds the HTTP caching rules the middleware applies, so that no
// cache shared between users (a CDN, a proxy) can serve one user's session
// to another.

// vary adds to every response the request headers that select its session:
// Cookie when sessions travel in cookies, Authorization when they travel in
// bearer tokens. A shared cache then keys its copies by them.
//
// A name a nested Manager's middleware added already is not added twice.
// buf holds the values when h has no Vary yet (the middleware's, allocated
// with its writer); the slice stored is capped, so a later Add by the
// handler copies it rather than writing into buf.
func (m *Manager) vary(h http.Header, buf *[2]string) {
	have := h["Vary"] // "Vary" is in canonical form
	add := buf[:0]
	if m.cfg.Carrier.cookies() && !slices.Contains(have, "Cookie") {
		add = append(add, "Cookie")
	}
	if m.cfg.Carrier.bearer() && !slices.Contains(have, "Authorization") {
		add = append(add, "Authorization")
	}
	switch {
	case len(add) == 0:
	case len(have) == 0:
		h["Vary"] = add[:len(add):len(add)]
	default:
		h["Vary"] = append(have, add...)
	}
}

// privateCacheControl returns the Cache-Control of a response that sets or
// expires the session cookie, given the handler's values: "no-store" if the
// handler set none, else the handler's directives made private (public and
// s-maxage dropped, private added), so that only the client's own cache
// may keep it.
func privateCacheControl(values []string) string {
	var out []string
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(d, "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "", "public", "s-maxage", "private", "proxy-revalidate":
				continue
			case "no-cache":
				if strings.Contains(d, "=") { // no-cache="Set-Cookie": field-specific, not every cache honours it
					continue
				}
			}
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return "no-store"
	}
	return "private, " + strings.Join(out, ", ")
}
