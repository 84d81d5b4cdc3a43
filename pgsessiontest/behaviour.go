package pgsessiontest

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testBehaviour checks the middleware's documented behaviour over real HTTP.
func testBehaviour(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)

	// 1. Load.
	t.Run("no cookie: no query, no cookie, no row", func(t *testing.T) {
		h := setup(t, nil)
		r := h.client().do("get:user")
		if r.status != 200 || r.setCookie != nil || len(r.result.Get) != 0 {
			t.Fatalf("status %d, cookie %v, get %v", r.status, r.setCookie, r.result.Get)
		}
		if l, a := h.counts(); l != 0 || a != 0 {
			t.Errorf("backend calls: %d loads, %d applies; want none", l, a)
		}
	})

	t.Run("bad cookies are rejected before any query", func(t *testing.T) {
		h := setup(t, nil)
		other := signKey(t, h.cookieName, randomBytes(32), randomBytes(32)) // another secret
		wrongName := signKey(t, "other-name", randomBytes(32), h.hashKey)   // signed for another cookie
		shortKey := signKey(t, h.cookieName, randomBytes(8), h.hashKey)     // not a session key
		for _, v := range []string{"garbage", "", "%%%", strings.Repeat("A", 20000), other, wrongName, shortKey,
			other[:len(other)-2], "\xff\xfe", `"quoted"`} {
			r := h.request(h.cookieName+"="+v, "get:user", "set:visited:true")
			if r.status != 200 || len(r.result.Get) != 0 || r.errs() != "" {
				t.Errorf("cookie %.40q: status %d, get %v, errs %s", v, r.status, r.result.Get, r.errs())
			}
			if r.setCookie == nil {
				t.Errorf("cookie %.40q: want a fresh session cookie", v)
			}
		}
		if l, _ := h.counts(); l != 0 {
			t.Errorf("%d backend loads for unverifiable cookies; want 0", l)
		}
	})

	t.Run("unknown key is a miss, and is never adopted (no fixation)", func(t *testing.T) {
		h := setup(t, nil)
		planted := randomBytes(32)
		r := h.request(h.cookieName+"="+signKey(t, h.cookieName, planted, h.hashKey), "get:user", "set:user:\"ada\"")
		if r.status != 200 || len(r.result.Get) != 0 || r.setCookie == nil {
			t.Fatalf("status %d, get %v, cookie %v", r.status, r.result.Get, r.setCookie)
		}
		if l, _ := h.counts(); l != 1 {
			t.Errorf("%d loads, want 1", l)
		}
		if bytes.Equal(h.key(r.setCookie.Value), planted) {
			t.Fatal("the client-chosen key was adopted")
		}
		if _, err := h.stored(signKey(t, h.cookieName, planted, h.hashKey)); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("planted key has a row: %v", err)
		}
	})

	t.Run("several cookies of that name: the one that verifies is used", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:user:\"ada\"")
		r := h.request(h.cookieName+"=stale; "+h.cookieName+"="+c.cookie+"; "+h.cookieName+"=also-stale", "get:user")
		if string(r.result.Get["user"]) != `"ada"` {
			t.Errorf("get = %v, want ada", r.result.Get)
		}
	})

	t.Run("backend error on load is the ErrorHandler's 500, never a fresh session", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:user:\"ada\"")
		h.backend.failLoad.Store(true)
		r := c.do("get:user", "set:x:1")
		h.backend.failLoad.Store(false)
		if r.status != http.StatusInternalServerError || r.setCookie != nil || strings.Contains(r.body, "ada") {
			t.Fatalf("status %d, cookie %v, body %q; want a bare 500", r.status, r.setCookie, r.body)
		}
		if r := c.do("get:user", "get:x"); string(r.result.Get["user"]) != `"ada"` || r.result.Get["x"] != nil {
			t.Errorf("after the outage: %v", r.result.Get)
		}
	})

	// 2. Expiry.
	t.Run("idle timeout: the session is absent and its key dead", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.IdleTimeout = time.Hour; c.TimeoutResolution = time.Minute })
		c := h.client()
		c.do("set:user:\"ada\"")
		old := c.cookie
		h.clock.Advance(59 * time.Minute)
		if r := c.do("get:user"); string(r.result.Get["user"]) != `"ada"` {
			t.Fatalf("before the timeout: %v", r.result.Get)
		}
		h.clock.Advance(time.Hour)
		r := c.do("get:user")
		if len(r.result.Get) != 0 || r.setCookie == nil || r.setCookie.MaxAge >= 0 {
			t.Fatalf("after the timeout: get %v, cookie %v; want nothing and an expired cookie", r.result.Get, r.setCookie)
		}
		if _, err := h.stored(old); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("expired row still stored: %v", err)
		}
		// The dead key stays dead: a write with it starts a new session.
		r = h.request(h.cookieName+"="+old, "get:user", "set:user:\"eve\"")
		if len(r.result.Get) != 0 || r.setCookie == nil || bytes.Equal(h.key(r.setCookie.Value), h.key(old)) {
			t.Errorf("dead key: get %v, cookie %v", r.result.Get, r.setCookie)
		}
	})

	t.Run("absolute timeout ends an active session", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.IdleTimeout, c.AbsoluteTimeout, c.TimeoutResolution = 8*time.Hour, 24*time.Hour, time.Minute
		})
		c := h.client()
		c.do("set:user:\"ada\"")
		for range 4 {
			h.clock.Advance(5 * time.Hour)
			if r := c.do("get:user"); string(r.result.Get["user"]) != `"ada"` {
				t.Fatalf("active session lost early at %v", h.clock.Now())
			}
		}
		h.clock.Advance(4 * time.Hour) // 24h after creation
		if r := c.do("get:user"); len(r.result.Get) != 0 {
			t.Errorf("session outlived its absolute timeout: %v", r.result.Get)
		}
	})

	t.Run("timeouts can be disabled; an absolute timeout beyond 30 days works", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.IdleTimeout, c.AbsoluteTimeout = -1, 90*24*time.Hour })
		c := h.client()
		c.do("set:user:\"ada\"")
		h.clock.Advance(60 * 24 * time.Hour)
		if r := c.do("get:user"); string(r.result.Get["user"]) != `"ada"` {
			t.Fatalf("after 60 idle days with idle expiry off: %v", r.result.Get)
		}
		h.clock.Advance(30 * 24 * time.Hour)
		if r := c.do("get:user"); len(r.result.Get) != 0 {
			t.Errorf("after 90 days: %v", r.result.Get)
		}
	})

	// 3. No resurrection.
	t.Run("a request racing a logout does not resurrect the session, and its write is refused", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:user:\"ada\"")
		stale := c.cookie
		racer := h.hold(c.cookieHeader(), "racer", "set:cart:[1,2]") // has loaded the session
		reader := h.hold(c.cookieHeader(), "reader", "get:user")     // so has this one, which changes nothing
		if r := c.do("clear", "rotate"); r.setCookie == nil || r.setCookie.MaxAge >= 0 {
			t.Fatalf("logout: cookie %v, want expired", r.setCookie)
		}
		if r := racer(); r.status != http.StatusConflict || r.setCookie != nil {
			t.Errorf("racer: status %d, cookie %v; want 409 (its write was not stored) and no cookie", r.status, r.setCookie)
		}
		if r := reader(); r.status != 200 || r.setCookie != nil {
			t.Errorf("reader: status %d, cookie %v; want 200 and no cookie", r.status, r.setCookie)
		}
		if _, err := h.stored(stale); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("logged-out key resurrected: %v", err)
		}
		if r := h.request(h.cookieName+"="+stale, "get:user", "get:cart"); len(r.result.Get) != 0 {
			t.Errorf("logged-out key still serves %v", r.result.Get)
		}
	})

	t.Run("a request racing a login rotation neither revives the old key nor writes into the login", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:cart:[]")
		stale := c.cookie
		racer := h.hold(c.cookieHeader(), "racer", "set:theme:\"dark\"")
		c.do("set:user:\"ada\"", "rotate")
		if r := racer(); r.status != http.StatusConflict || r.setCookie != nil {
			t.Errorf("racer: status %d, cookie %v; want 409 and no cookie", r.status, r.setCookie)
		}
		if r := c.do("get:theme"); len(r.result.Get) != 0 {
			t.Errorf("the pre-login key wrote into the login: %v", r.result.Get)
		}
		if _, err := h.stored(stale); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("rotated-away key resurrected: %v", err)
		}
		if r := c.do("get:user", "get:cart"); string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["cart"]) != `[]` {
			t.Errorf("rotated session: %v", r.result.Get)
		}
	})

	// 4. Empty sessions.
	t.Run("empty sessions cost nothing; clearing deletes and expires the cookie", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		if r := c.do("get:x", "set:x:1", "del:x"); r.setCookie != nil {
			t.Errorf("session left empty sent cookie %v", r.setCookie)
		}
		if _, a := h.counts(); a != 0 {
			t.Errorf("%d writes for an empty session", a)
		}
		c.do("set:x:1")
		key := c.cookie
		r := c.do("clear")
		if r.setCookie == nil || r.setCookie.MaxAge >= 0 || r.setCookie.Value != "" {
			t.Fatalf("clear: cookie %v, want expired", r.setCookie)
		}
		if _, err := h.stored(key); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("cleared session still stored: %v", err)
		}
	})

	// 5. Timeout resolution.
	t.Run("timeout resolution: unchanged reads write nothing until the resolution passes", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.TimeoutResolution = 10 * time.Minute })
		c := h.client()
		c.do("set:user:\"ada\"")
		_, before := h.counts()
		for range 5 {
			h.clock.Advance(time.Minute)
			if r := c.do("get:user"); r.setCookie != nil {
				t.Errorf("cookie sent on an unchanged read: %v", r.setCookie)
			}
		}
		if _, a := h.counts(); a != before {
			t.Fatalf("%d writes for reads within the resolution, want 0", a-before)
		}
		h.clock.Advance(5 * time.Minute)
		r := c.do("get:user")
		if _, a := h.counts(); a != before+1 || r.setCookie != nil {
			t.Fatalf("after the resolution: %d writes, cookie %v; want 1 write and no cookie (its expiry does not move)", a-before, r.setCookie)
		}
		if rec, err := h.stored(c.cookie); err != nil || !rec.Accessed.Equal(h.clock.Now()) {
			t.Errorf("stored access time = %v (%v), want %v", rec, err, h.clock.Now())
		}
		if st := h.m.Stats(); st.SkippedWrites != 5 || st.Updates != 1 || st.Inserts != 1 {
			t.Errorf("stats = %+v", st)
		}
	})

	// 6. Change detection and concurrency.
	t.Run("setting an equal value is not a change", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:prefs:{\"a\":1,\"b\":[true,null]}")
		_, before := h.counts()
		if r := c.do("set:prefs:{\"b\": [true, null], \"a\": 1}"); r.setCookie != nil || r.errs() != "" {
			t.Errorf("equal value: cookie %v, errs %s", r.setCookie, r.errs())
		}
		if _, a := h.counts(); a != before {
			t.Errorf("%d writes for an unchanged value", a-before)
		}
	})

	t.Run("concurrent requests setting different keys both persist", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:base:0")
		one := h.hold(c.cookieHeader(), "one", "set:a:1")
		two := h.hold(c.cookieHeader(), "two", "del:base", "set:b:2") // both loaded {base}
		one()
		two()
		r := c.do("get:a", "get:b", "get:base")
		if string(r.result.Get["a"]) != "1" || string(r.result.Get["b"]) != "2" || r.result.Get["base"] != nil {
			t.Errorf("merged = %v, want a=1 b=2 and base deleted", r.result.Get)
		}
	})

	t.Run("concurrent requests setting the same key: last writer wins", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:k:0")
		one := h.hold(c.cookieHeader(), "one", "set:k:1")
		two := h.hold(c.cookieHeader(), "two", "set:k:2")
		one()
		two()
		if r := c.do("get:k"); string(r.result.Get["k"]) != "2" {
			t.Errorf("k = %s, want the last writer's 2", r.result.Get["k"])
		}
	})

	// 7. Save on response.
	t.Run("the cookie goes out with the first write; later changes are refused", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		r := c.do("set:a:1", "write", "set:b:2", "del:a", "clear", "rotate", "freeze")
		if r.setCookie == nil || !strings.HasPrefix(r.body, "started\n") {
			t.Fatalf("cookie %v, body %q", r.setCookie, r.body)
		}
		if n := strings.Count(r.errs(), pgsession.ErrAlreadySaved.Error()); n != 5 {
			t.Errorf("errors after the save: %q; want 5 ErrAlreadySaved", r.errs())
		}
		if r := c.do("get:a", "get:b"); string(r.result.Get["a"]) != "1" || r.result.Get["b"] != nil {
			t.Errorf("stored %v, want only a=1", r.result.Get)
		}
	})

	t.Run("WriteHeader, ReadFrom and a handler that writes nothing all save", func(t *testing.T) {
		h := setup(t, nil)
		for _, ops := range [][]string{{"set:a:1", "status:201"}, {"set:a:1", "readfrom"}, {"set:a:1", "nobody"}} {
			c := h.client()
			r := c.do(ops...)
			if r.setCookie == nil || r.header.Get("Vary") != "Cookie" || r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("%v: cookie %v, headers %v", ops, r.setCookie, r.header)
			}
			if r := c.do("get:a"); string(r.result.Get["a"]) != "1" {
				t.Errorf("%v: not saved: %v", ops, r.result.Get)
			}
		}
	})

	t.Run("Hijack saves first; ResponseController reaches the server's writer", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:a:1")
		if r := c.do("set:b:2", "hijack"); r.status != 200 || r.body != "hijacked" {
			t.Fatalf("hijacked response: %d %q", r.status, r.body)
		}
		if r := c.do("get:b", "deadline"); string(r.result.Get["b"]) != "2" || r.errs() != "" {
			t.Errorf("after hijack: get %v, errs %s", r.result.Get, r.errs())
		}
	})

	t.Run("Flush saves, so a streamed response carries the cookie", func(t *testing.T) {
		h := setup(t, nil)
		g := h.gate("stream")
		type result struct {
			cookie string
			err    error
		}
		got := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/?op=set:a:1&op=flush&op=wait:stream", nil)
			resp, err := h.srv.Client().Do(req) // returns once the headers arrive
			if err != nil {
				got <- result{err: err}
				return
			}
			defer resp.Body.Close()
			var v string
			for _, ck := range resp.Cookies() {
				if ck.Name == h.cookieName {
					v = ck.Value
				}
			}
			got <- result{cookie: v}
		}()
		g.reached(t, "stream")
		var res result
		select {
		case res = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("headers not received while the handler was still streaming")
		}
		g.open()
		if res.err != nil || res.cookie == "" {
			t.Fatalf("streamed response: cookie %q, err %v", res.cookie, res.err)
		}
		if _, err := h.stored(res.cookie); err != nil {
			t.Errorf("flushed session not stored: %v", err)
		}
	})

	t.Run("a failed save answers with the ErrorHandler instead of the handler", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
				http.Error(w, "session store down", http.StatusServiceUnavailable)
			}
		})
		h.backend.failApply.Store(true)
		r := h.client().do("set:a:1", "status:200")
		if r.status != http.StatusServiceUnavailable || r.setCookie != nil || r.header.Get("X-Handler") != "" ||
			!strings.Contains(r.body, "session store down") || strings.Contains(r.body, "started") {
			t.Errorf("status %d, cookie %v, header %v, body %q", r.status, r.setCookie, r.header, r.body)
		}
		if st := h.m.Stats(); st.Errors != 1 {
			t.Errorf("stats.Errors = %d, want 1", st.Errors)
		}
	})

	// 8. Cookie attributes and expiry.
	t.Run("cookie attributes and expiry", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.IdleTimeout, c.AbsoluteTimeout = 8*time.Hour, 10*time.Hour })
		c := h.client()
		r := c.do("set:a:1")
		ck := r.setCookie
		if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Domain != "" {
			t.Fatalf("cookie %+v: want HttpOnly, Secure, SameSite=Lax, Path=/", ck)
		}
		// The cookie lasts as long as the session can: its creation plus the
		// absolute timeout, so that a write never sends it again (a response
		// that did could undo a concurrent rotation in the client's jar).
		if ck.MaxAge != int((10*time.Hour).Seconds()) || !ck.Expires.Equal(h.clock.Now().Add(10*time.Hour)) {
			t.Errorf("new session: Max-Age %d, Expires %v; want the absolute timeout", ck.MaxAge, ck.Expires)
		}
		h.clock.Advance(7 * time.Hour)
		if r = c.do("set:a:2"); r.setCookie != nil {
			t.Errorf("a write sent the cookie again: %+v", r.setCookie)
		}
		// An idle session's cookie is expired by the first request it brings.
		h.clock.Advance(8 * time.Hour)
		if r = c.do("get:a"); r.setCookie == nil || r.setCookie.MaxAge >= 0 || len(r.result.Get) != 0 {
			t.Errorf("after the idle timeout: cookie %+v, read %v; want the cookie expired", r.setCookie, r.result.Get)
		}
	})

	t.Run("without an absolute timeout the cookie slides with each access time written", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.IdleTimeout, c.AbsoluteTimeout, c.TimeoutResolution = 8*time.Hour, -1, time.Hour
		})
		c := h.client()
		if ck := c.do("set:a:1").setCookie; ck == nil || ck.MaxAge != int((8*time.Hour).Seconds()) {
			t.Fatalf("new session: cookie %+v, want Max-Age 8h", ck)
		}
		h.clock.Advance(30 * time.Minute)
		if r := c.do("set:a:2"); r.setCookie != nil {
			t.Errorf("a write within the resolution sent the cookie: %+v", r.setCookie)
		}
		h.clock.Advance(time.Hour)
		if ck := c.do("get:a").setCookie; ck == nil || !ck.Expires.Equal(h.clock.Now().Add(8*time.Hour)) {
			t.Errorf("access time written: cookie %+v, want it sent again with Expires 8h from now", ck)
		}
	})

	t.Run("session-only cookie and configured attributes", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.Cookie = pgsession.CookieConfig{Name: "sid", Path: "/app", Domain: "example.com",
				SameSite: http.SameSiteStrictMode, Insecure: true, SessionOnly: true}
		})
		r := h.client().do("set:a:1")
		ck := r.setCookie
		if ck == nil || ck.Name != "sid" || ck.MaxAge != 0 || !ck.Expires.IsZero() || ck.Secure || !ck.HttpOnly ||
			ck.SameSite != http.SameSiteStrictMode || ck.Path != "/app" || ck.Domain != "example.com" {
			t.Errorf("cookie %+v", ck)
		}
	})

	// 9. Rotation.
	t.Run("RotateKey moves the data to a fresh key and kills the old one", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:cart:[1]")
		old := c.cookie
		r := c.do("set:user:\"ada\"", "rotate")
		if r.setCookie == nil || bytes.Equal(h.key(r.setCookie.Value), h.key(old)) {
			t.Fatalf("rotation cookie %v: want a new key", r.setCookie)
		}
		if r := c.do("get:user", "get:cart"); string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["cart"]) != "[1]" {
			t.Errorf("after rotation: %v", r.result.Get)
		}
		if r := h.request(h.cookieName+"="+old, "get:user", "get:cart"); len(r.result.Get) != 0 {
			t.Errorf("old key still works: %v", r.result.Get)
		}
		if st := h.m.Stats(); st.Rotations != 1 {
			t.Errorf("stats.Rotations = %d", st.Rotations)
		}
	})

	t.Run("rotation restarts the absolute timeout", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.IdleTimeout, c.AbsoluteTimeout, c.TimeoutResolution = 8*time.Hour, 24*time.Hour, time.Minute
		})
		c := h.client()
		c.do("set:a:1")
		for range 4 {
			h.clock.Advance(5 * time.Hour)
			c.do("get:a")
		}
		c.do("set:user:\"ada\"", "rotate") // at 20h
		h.clock.Advance(6 * time.Hour)     // 26h after creation, 6h after login
		if r := c.do("get:user"); string(r.result.Get["user"]) != `"ada"` {
			t.Errorf("session expired by its pre-login creation time: %v", r.result.Get)
		}
	})

	t.Run("rotating a session left empty deletes it", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:a:1")
		old := c.cookie
		r := c.do("del:a", "rotate")
		if r.setCookie == nil || r.setCookie.MaxAge >= 0 {
			t.Errorf("cookie %v, want expired", r.setCookie)
		}
		if _, err := h.stored(old); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("old row: %v", err)
		}
	})

	// 10. Freeze.
	t.Run("FreezeSession: no write, no delete, no cookie", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		if r := c.do("set:a:1", "freeze", "get:a"); r.setCookie != nil || string(r.result.Get["a"]) != "1" {
			t.Errorf("frozen new session: cookie %v, get %v", r.setCookie, r.result.Get)
		}
		c.do("set:a:1")
		_, before := h.counts()
		h.clock.Advance(time.Hour)
		if r := c.do("clear", "rotate", "freeze"); r.setCookie != nil {
			t.Errorf("frozen logout sent cookie %v", r.setCookie)
		}
		if _, a := h.counts(); a != before {
			t.Errorf("%d writes while frozen", a-before)
		}
		if r := c.do("get:a"); string(r.result.Get["a"]) != "1" {
			t.Errorf("frozen clear changed the session: %v", r.result.Get)
		}
	})

	// 11. Secret rotation.
	t.Run("cookies signed with an older secret verify and are re-signed", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		oldSecret, newSecret := randomBytes(32), randomBytes(32)
		h1 := newHarness(t, b, func(c *pgsession.Config) { c.HashKeys = [][]byte{oldSecret} })
		c := h1.client()
		c.do("set:user:\"ada\"")
		h2 := newHarness(t, b, func(c *pgsession.Config) {
			c.HashKeys = [][]byte{newSecret, oldSecret}
			c.TimeoutResolution = -1 // every request writes, so the cookie is re-sent
		})
		c.h = h2
		r := c.do("get:user")
		if string(r.result.Get["user"]) != `"ada"` || r.setCookie == nil {
			t.Fatalf("old-secret cookie: get %v, cookie %v", r.result.Get, r.setCookie)
		}
		decodeKey(t, h2.cookieName, r.setCookie.Value, newSecret) // fails the test unless signed with the new secret
	})

	// 13. Bad input.
	t.Run("values that cannot be stored are refused with an error and change nothing", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.MaxDataSize = 200 })
		c := h.client()
		c.do("set:a:1")
		big := `"` + strings.Repeat("x", 300) + `"`
		r := c.do("setfunc:f", "set:nul:\"a\\u0000b\"", "set:\xff:1", "set:big:"+big, "get:a")
		for _, want := range []error{pgsession.ErrInvalidValue, pgsession.ErrInvalidValue, pgsession.ErrInvalidValue, pgsession.ErrTooLarge} {
			if !strings.Contains(r.errs(), want.Error()) {
				t.Errorf("errors %q lack %q", r.errs(), want)
			}
		}
		if len(r.result.Errs) != 4 || r.setCookie != nil {
			t.Errorf("errs %q, cookie %v", r.errs(), r.setCookie)
		}
		if r := c.do("get:f", "get:nul", "get:big", "get:a"); len(r.result.Get) != 1 {
			t.Errorf("stored %v, want only a", r.result.Get)
		}
		// The text \u0000 (a backslash, then u0000) is not a NUL: it is stored.
		if r := c.do(`set:lit:"\\u0000"`); r.errs() != "" {
			t.Errorf("literal backslash-u0000 refused: %s", r.errs())
		}
		if r := c.do("get:lit"); string(r.result.Get["lit"]) != `"\\u0000"` {
			t.Errorf("literal backslash-u0000 stored as %s", r.result.Get["lit"])
		}
	})

	t.Run("a value exactly at MaxDataSize is stored intact; one byte more is refused", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.MaxDataSize = 200 })
		c := h.client()
		// Each key counts len(key) + len(JSON value) + 4 bytes: "a" 6, so
		// "big" may take a 187-byte value (2-byte é included).
		c.do("set:a:1")
		fits := `"` + strings.Repeat("é", 92) + `x"` // 187 bytes: 200 in all
		over := `"` + strings.Repeat("é", 93) + `"`  // 188 bytes: 201
		if r := c.do("set:big:" + over); !strings.Contains(r.errs(), pgsession.ErrTooLarge.Error()) {
			t.Errorf("one byte over the limit: errs %q", r.errs())
		}
		if r := c.do("set:big:" + fits); r.errs() != "" {
			t.Fatalf("at the limit: %s", r.errs())
		}
		if r := c.do("get:big"); string(r.result.Get["big"]) != fits {
			t.Errorf("stored %s, want %s", r.result.Get["big"], fits)
		}
	})
}
