package pgsessiontest

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testSecurity checks the defences against other sites and shared caches:
// cookie tossing from a sibling host, caches that could serve one user's
// response to another, and bearer-only APIs that browsers cannot drive.
func testSecurity(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)

	t.Run("the default cookie is __Host- prefixed, so other hosts cannot toss one in", func(t *testing.T) {
		h := setup(t, nil)
		ck := h.client().do("set:a:1").setCookie
		if ck == nil || ck.Name != "__Host-"+pgsession.DefaultCookieName || !ck.Secure || ck.Path != "/" || ck.Domain != "" {
			t.Fatalf("cookie %+v: want __Host-session-key, Secure, Path=/, no Domain", ck)
		}
		for _, c := range []struct {
			cfg  pgsession.CookieConfig
			want string
		}{
			{pgsession.CookieConfig{Domain: "example.com"}, "__Secure-session-key"},
			{pgsession.CookieConfig{Path: "/app"}, "__Secure-session-key"},
			{pgsession.CookieConfig{Insecure: true}, "session-key"},
			{pgsession.CookieConfig{Name: "sid"}, "sid"},
		} {
			m, err := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{randomBytes(32)}, Cookie: c.cfg})
			if err != nil || m.CookieName() != c.want {
				t.Errorf("%+v: name %q, %v; want %q", c.cfg, m.CookieName(), err, c.want)
			}
		}
	})

	t.Run("cookies of two live sessions: served as neither", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Cookie.Insecure = true }) // tossing works against unprefixed names
		victim, attacker := h.client(), h.client()
		victim.do(`set:user:"victim"`)
		attacker.do(`set:user:"attacker"`)
		// The tossed cookie (longer path) comes first; either order is refused.
		for _, hdr := range []string{
			h.cookieName + "=" + attacker.cookie + "; " + h.cookieName + "=" + victim.cookie,
			h.cookieName + "=" + victim.cookie + "; " + h.cookieName + "=" + attacker.cookie,
		} {
			r := h.request(hdr, "get:user", "clear")
			if len(r.result.Get) != 0 || r.status != 200 {
				t.Errorf("ambiguous request: %d, saw %v; want no session", r.status, r.result.Get)
			}
		}
		// Neither session was touched by those requests' Clear.
		for _, c := range []*client{victim, attacker} {
			if r := c.do("get:user"); len(r.result.Get) != 1 {
				t.Errorf("a session was changed by an ambiguous request: %v", r.result.Get)
			}
		}
		if n := h.m.Stats().Ambiguous; n != 2 {
			t.Errorf("Stats().Ambiguous = %d, want 2", n)
		}
		// A stale cookie (logged out, on an old path) beside the live one
		// stays harmless: the live session is served.
		old := h.client()
		old.do("set:x:1")
		stale := old.cookie
		old.do("clear")
		r := h.request(h.cookieName+"="+stale+"; "+h.cookieName+"="+victim.cookie, "get:user")
		if string(r.result.Get["user"]) != `"victim"` {
			t.Errorf("stale cookie beside a live one: saw %v, want the live session", r.result.Get)
		}
		// The same cookie twice is one session, not two.
		r = h.request(h.cookieName+"="+victim.cookie+"; "+h.cookieName+"="+victim.cookie, "get:user")
		if string(r.result.Get["user"]) != `"victim"` {
			t.Errorf("duplicate cookie: saw %v", r.result.Get)
		}
	})

	t.Run("dead signed cookies cannot push a live one out of reach", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Cookie.Insecure = true })
		victim, attacker := h.client(), h.client()
		victim.do(`set:user:"victim"`)
		attacker.do(`set:user:"attacker"`)
		var dead []string
		for range 2 {
			c := h.client()
			c.do(`set:user:"attacker"`)
			v := c.cookie
			c.do("clear")
			dead = append(dead, h.cookieName+"="+v)
		}
		a, v := h.cookieName+"="+attacker.cookie, h.cookieName+"="+victim.cookie
		// More verifying keys than the middleware loads (3) are ambiguous
		// by themselves: the last could be another live session's.
		for _, hdr := range [][]string{
			{a, dead[0], dead[1], v},
			{dead[0], dead[1], a, v},
			{dead[0], dead[1], a, v, v}, // duplicates count once
		} {
			if r := h.request(strings.Join(hdr, "; "), "get:user"); len(r.result.Get) != 0 || r.status != 200 {
				t.Errorf("live cookie after %d others: %d, user %s; want no session", len(hdr)-1, r.status, r.result.Get["user"])
			}
		}
		if n := h.m.Stats().Ambiguous; n != 3 {
			t.Errorf("Stats().Ambiguous = %d, want 3", n)
		}
		// Within the limit, dead keys beside one live one are ignored.
		if r := h.request(strings.Join([]string{dead[0], dead[1], v}, "; "), "get:user"); string(r.result.Get["user"]) != `"victim"` {
			t.Errorf("two dead cookies before a live one: user %s, want the live session's", r.result.Get["user"])
		}
	})

	t.Run("every response varies by Cookie; one that sets the cookie is private", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		r := c.do("set:a:1", "cache:public, max-age=600")
		if cc := r.header.Get("Cache-Control"); r.setCookie == nil || cc != "private, max-age=600" {
			t.Errorf("login with a public handler policy: Cache-Control %q, cookie %v; want private, max-age=600", cc, r.setCookie)
		}
		r = c.do("get:a") // a read: no Set-Cookie, but the page is this user's
		if r.setCookie != nil || !slices.Contains(r.header.Values("Vary"), "Cookie") {
			t.Errorf("read-only request: cookie %v, Vary %q; want Vary: Cookie", r.setCookie, r.header.Values("Vary"))
		}
		if r := h.client().do("get:a"); !slices.Contains(r.header.Values("Vary"), "Cookie") {
			t.Errorf("anonymous request: Vary %q; want Cookie", r.header.Values("Vary"))
		}
		for i, cc := range []string{`no-cache="Set-Cookie"`, "s-maxage=60, public", "private, no-store"} {
			r := c.do("set:a:"+strconv.Itoa(i+2), "rotate", "cache:"+cc)
			got := r.header.Get("Cache-Control")
			if r.setCookie == nil {
				t.Fatalf("set:a:%d sent no cookie", i+2)
			}
			if strings.Contains(got, "public") || strings.Contains(got, "s-maxage") || !(got == "no-store" || strings.HasPrefix(got, "private")) {
				t.Errorf("handler said %q: Cache-Control %q", cc, got)
			}
		}
		if r := c.do("clear"); r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("logout: Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
		}
	})

	t.Run("BearerOnly: no cookie is set or read", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Carrier = pgsession.BearerOnly })
		r := h.send(http.Header{}, `set:user:"ada"`, "token")
		if r.setCookie != nil || len(r.header.Values("Set-Cookie")) != 0 || r.result.Token == "" {
			t.Fatalf("login: Set-Cookie %q, token %q; want no cookie and a token", r.header.Values("Set-Cookie"), r.result.Token)
		}
		if !slices.Contains(r.header.Values("Vary"), "Authorization") || slices.Contains(r.header.Values("Vary"), "Cookie") {
			t.Errorf("Vary %q, want Authorization only", r.header.Values("Vary"))
		}
		// A browser would send the token as a cookie only if one was set;
		// even then it is ignored.
		loads, _ := h.counts()
		if r := h.request(h.cookieName+"="+r.result.Token, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("cookie accepted in BearerOnly mode: %v", r.result.Get)
		}
		if l, _ := h.counts(); l != loads {
			t.Errorf("a cookie cost %d loads in BearerOnly mode", l-loads)
		}
		if r := h.bearer(r.result.Token, "get:user", "rotate", "token"); string(r.result.Get["user"]) != `"ada"` || r.setCookie != nil || r.result.Token == "" {
			t.Errorf("token: saw %v, cookie %v, new token %q", r.result.Get, r.setCookie, r.result.Token)
		}
	})
}
