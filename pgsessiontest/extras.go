package pgsessiontest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testExtras checks the features beyond the core: bearer tokens, principals
// ("log out everywhere"), rotation triggers and the indicator cookie.
func testExtras(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)

	t.Run("tokens of the old form (key alone) keep working and move to the new form at the next write", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Carrier = pgsession.CookieOrBearer })
		r := h.request("", `set:user:"ada"`)
		key, sid, ok := h.credOf(r.setCookie.Value)
		if !ok || sid == (pgsession.SessionID{}) {
			t.Fatalf("a new session's cookie %q does not carry its SessionID", r.setCookie.Value)
		}
		old := h.sign(t, key) // the same session, as issued before tokens carried the SessionID
		upgraded := func(what, value string) {
			t.Helper()
			k, s, ok := h.credOf(value)
			if !ok || s != sid || !bytes.Equal(k, key) {
				t.Errorf("%s: %q does not carry the same key and SessionID", what, value)
			}
		}
		// A read loads it, and leaves the client's cookie alone.
		r = h.request(h.cookieName+"="+old, "get:user")
		if string(r.result.Get["user"]) != `"ada"` || r.setCookie != nil || r.errs() != "" {
			t.Fatalf("read with a token of the old form: get %v, cookie %v, errs %s", r.result.Get, r.setCookie, r.errs())
		}
		// A write sends the new form: the same session and key.
		r = h.request(h.cookieName+"="+old, "set:n:1")
		if r.setCookie == nil {
			t.Fatal("a write with a cookie of the old form sent no cookie")
		}
		upgraded("the cookie after a write", r.setCookie.Value)
		if rec, err := h.stored(r.setCookie.Value); err != nil || string(rec.Data["n"]) != "1" || rec.SessionID != sid {
			t.Errorf("after the write: %+v, %v", rec, err)
		}
		// A bearer token of the old form, and Token, Load and Save.
		r = h.bearer(old, "get:user", "token")
		if string(r.result.Get["user"]) != `"ada"` {
			t.Fatalf("bearer of the old form: get %v, errs %s", r.result.Get, r.errs())
		}
		upgraded("Token", r.result.Token)
		job := mustLoadToken(t, h, context.Background(), old)
		if got, err := h.m.Save(job); err != nil {
			t.Fatal(err)
		} else {
			upgraded("Save", got)
		}
		// A rotation keeps the SessionID, and the token of the old form dies.
		r = h.request(h.cookieName+"="+old, "rotate")
		if r.setCookie == nil {
			t.Fatal("a rotation sent no cookie")
		}
		if k, s, _ := h.credOf(r.setCookie.Value); s != sid || bytes.Equal(k, key) {
			t.Errorf("after a rotation: SessionID %s, same key %v; want %s and a new key", s, bytes.Equal(k, key), sid)
		}
		if r = h.request(h.cookieName+"="+old, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("the rotated-away token of the old form still loads: %v", r.result.Get)
		}
	})

	t.Run("bearer tokens carry the session without cookies", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Carrier = pgsession.CookieOrBearer })
		// Login from an app: no token yet; the body hands one out.
		r := h.send(http.Header{}, "set:user:\"ada\"", "rotate", "token")
		tok := r.result.Token
		if tok == "" || r.errs() != "" {
			t.Fatalf("login: token %q, errs %s", tok, r.errs())
		}
		if r.setCookie == nil || !bytes.Equal(h.key(r.setCookie.Value), h.key(tok)) {
			t.Errorf("the token and the login cookie name different keys")
		}
		r = h.bearer(tok, "get:user", "set:n:1")
		if string(r.result.Get["user"]) != `"ada"` || r.setCookie != nil || !slices.Contains(r.header.Values("Vary"), "Authorization") {
			t.Fatalf("with token: get %v, cookie %v, headers %v", r.result.Get, r.setCookie, r.header)
		}
		// Rotation hands out a new token and kills the old one.
		r = h.bearer(tok, "set:user:\"bob\"", "rotate", "token")
		if r.result.Token == "" || bytes.Equal(h.key(r.result.Token), h.key(tok)) || r.setCookie != nil {
			t.Fatalf("rotation: token %q, cookie %v", r.result.Token, r.setCookie)
		}
		if r := h.bearer(tok, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("old token still works: %v", r.result.Get)
		}
		if r := h.bearer(r.result.Token, "get:user", "get:n"); string(r.result.Get["user"]) != `"bob"` || string(r.result.Get["n"]) != "1" {
			t.Errorf("new token: %v", r.result.Get)
		}
		// Bad tokens are rejected before any query; lowercase scheme works.
		loads, _ := h.counts()
		for _, bad := range []string{"garbage", signKey(t, h.cookieName, randomBytes(32), randomBytes(32)), ""} {
			if r := h.bearer(bad, "get:user"); r.status != 200 || len(r.result.Get) != 0 {
				t.Errorf("bad token %.20q: %d %v", bad, r.status, r.result.Get)
			}
		}
		if l, _ := h.counts(); l != loads {
			t.Errorf("%d loads for bad tokens", l-loads)
		}
		r = h.send(http.Header{"Authorization": {"bearer " + r.result.Token}}, "get:user")
		if r.status != 200 {
			t.Errorf("lowercase scheme: %d", r.status)
		}
	})

	t.Run("bearer tokens are off by default", func(t *testing.T) {
		h := setup(t, nil)
		r := h.send(http.Header{}, "set:user:\"ada\"", "token")
		if r := h.bearer(r.result.Token, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("token accepted with CookieOnly: %v", r.result.Get)
		}
		if r := h.client().do("token"); !bytes.Contains([]byte(r.errs()), []byte(pgsession.ErrEmptySession.Error())) {
			t.Errorf("Token of an empty session: %q", r.errs())
		}
	})

	t.Run("principal: automatic rotation, list and log out everywhere", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.PrincipalKey = "user_id" })
		ctx := context.Background()
		if _, ok := h.backend.Backend.(backend.PrincipalBackend); !ok {
			if _, err := h.m.ListByPrincipal(ctx, 42); !errors.Is(err, pgsession.ErrNoPrincipal) {
				t.Fatalf("ListByPrincipal on a backend without principals: %v", err)
			}
			t.Skip("backend does not implement backend.PrincipalBackend")
		}
		phone, laptop, other := h.client(), h.client(), h.client()
		phone.do("set:cart:[1]")
		before := phone.cookie
		phone.do("set:user_id:42") // login without RotateKey
		if bytes.Equal(h.key(before), h.key(phone.cookie)) {
			t.Fatal("changing the principal did not rotate the key")
		}
		h.clock.Advance(time.Minute)
		laptop.do("set:user_id:42")
		other.do("set:user_id:7")
		phone.do("set:theme:\"dark\"", "rotate") // the principal survives a rotation that doesn't touch it
		list, err := h.m.ListByPrincipal(ctx, 42)
		if err != nil || len(list) != 2 {
			t.Fatalf("ListByPrincipal(42) = %v, %v; want 2 sessions", list, err)
		}
		if !list[0].LastAccess.After(list[1].LastAccess) && !list[0].LastAccess.Equal(list[1].LastAccess) {
			t.Errorf("not most recent first: %+v", list)
		}
		for _, s := range list {
			if s.Expires.IsZero() || s.Created.IsZero() {
				t.Errorf("incomplete info %+v", s)
			}
		}
		if n, err := h.m.DeleteByPrincipal(ctx, "42"); err != nil || n != 2 { // "42" and 42 are one principal
			t.Fatalf("DeleteByPrincipal = %d, %v; want 2", n, err)
		}
		for _, c := range []*client{phone, laptop} {
			if r := c.do("get:user_id", "get:cart"); len(r.result.Get) != 0 {
				t.Errorf("session survived log-out-everywhere: %v", r.result.Get)
			}
		}
		if r := other.do("get:user_id"); string(r.result.Get["user_id"]) != "7" {
			t.Errorf("another user's session was deleted: %v", r.result.Get)
		}
		// Logging out (deleting the principal) clears the column.
		other.do("del:user_id", "set:bye:true")
		if list, _ := h.m.ListByPrincipal(ctx, 7); len(list) != 0 {
			t.Errorf("logged-out session still listed: %v", list)
		}
		if _, err := h.m.DeleteByPrincipal(ctx, func() {}); !errors.Is(err, pgsession.ErrInvalidValue) {
			t.Errorf("unencodable principal: %v", err)
		}
	})

	t.Run("log out everywhere beats concurrent rotations", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.PrincipalKey = "user_id" })
		if _, ok := h.backend.Backend.(backend.PrincipalBackend); !ok {
			t.Skip("backend does not implement backend.PrincipalBackend")
		}
		ctx := context.Background()
		// One client rotating in a loop, following each new cookie, while
		// DeleteByPrincipal runs once: afterwards its newest key is dead.
		for round := range 20 {
			c := h.client()
			c.do(`set:user_id:"alice"`)
			deleted := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-deleted:
						c.do("rotate") // one more after the deletion: it must not revive
						return
					default:
					}
					c.do("rotate")
				}
			}()
			time.Sleep(time.Duration(round%5) * time.Millisecond)
			if _, err := h.m.DeleteByPrincipal(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			close(deleted)
			<-done
			if r := c.do("get:user_id"); len(r.result.Get) != 0 {
				t.Fatalf("round %d: the rotated session survived DeleteByPrincipal: %v", round, r.result.Get)
			}
		}
		// Eight rotations of one key at once: exactly one wins, and a
		// deletion racing them leaves nothing alive.
		for round := range 10 {
			c := h.client()
			c.do(`set:user_id:"alice"`)
			cookie := c.cookieHeader()
			results := make(chan response, 8)
			for range 8 {
				go func() { results <- h.request(cookie, "rotate") }()
			}
			if round%2 == 1 {
				if _, err := h.m.DeleteByPrincipal(ctx, "alice"); err != nil {
					t.Fatal(err)
				}
			}
			var winners []string
			for range 8 {
				if r := <-results; r.setCookie != nil && r.setCookie.MaxAge > 0 {
					winners = append(winners, r.setCookie.Value)
				}
			}
			alive := 0
			for _, w := range winners {
				if r := h.request(h.cookieName+"="+w, "get:user_id"); len(r.result.Get) != 0 {
					alive++
				}
			}
			if round%2 == 0 && (len(winners) != 1 || alive != 1) {
				t.Fatalf("round %d: %d rotations won, %d keys alive; want exactly one", round, len(winners), alive)
			}
			if round%2 == 1 && alive != 0 {
				t.Fatalf("round %d: %d keys alive after DeleteByPrincipal", round, alive)
			}
		}
	})

	t.Run("RotateWhen rotates on the application's own rule", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.RotateWhen = func(old, new map[string]json.RawMessage) bool { return string(old["role"]) != string(new["role"]) }
		})
		c := h.client()
		c.do("set:role:\"guest\"") // new session: no old key to rotate
		k1 := c.cookie
		c.do("set:x:1")
		if !bytes.Equal(h.key(k1), h.key(c.cookie)) {
			t.Fatal("rotated without the rule firing")
		}
		c.do("set:role:\"admin\"")
		if bytes.Equal(h.key(k1), h.key(c.cookie)) {
			t.Fatal("role change did not rotate")
		}
	})

	t.Run("indicator cookie follows the session", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Cookie.IndicatorName = "has-session" })
		c := h.client()
		if r := c.do("get:a"); len(r.header.Values("Set-Cookie")) != 0 {
			t.Errorf("anonymous request got cookies %v", r.header.Values("Set-Cookie"))
		}
		r := c.do("set:a:1")
		ind := cookieNamed(r, "has-session")
		if ind == nil || ind.HttpOnly || !ind.Secure || ind.Value != strconv.FormatInt(h.clock.Now().Add(pgsession.DefaultAbsoluteTimeout).Unix(), 10) ||
			ind.MaxAge != r.setCookie.MaxAge {
			t.Fatalf("indicator %+v, session cookie %+v", ind, r.setCookie)
		}
		if ind := cookieNamed(c.do("clear"), "has-session"); ind == nil || ind.MaxAge >= 0 {
			t.Errorf("indicator after logout: %+v", ind)
		}
	})
}

func cookieNamed(r response, name string) *http.Cookie {
	resp := http.Response{Header: r.header}
	for _, ck := range resp.Cookies() {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}
