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
func (m *Manager) vary(h http.Header) {
	if m.cfg.Carrier.cookies() {
		addVary(h, "Cookie")
	}
	if m.cfg.Carrier.bearer() {
		addVary(h, "Authorization")
	}
}

// addVary adds name to h's Vary unless a nested Manager's middleware did.
func addVary(h http.Header, name string) {
	if !slices.Contains(h.Values("Vary"), name) {
		h.Add("Vary", name)
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
