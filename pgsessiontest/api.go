package pgsessiontest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testAPI checks the session API beyond Get and Set: flash messages (Pop),
// Keys and Has, sessions loaded and saved outside the middleware (Load and
// Save), and several Managers serving one request.
func testAPI(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)

	t.Run("Pop: a flash is shown once, after a redirect", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do(`set:user:"ada"`)
		if r := c.do(`set:flash:["saved","sent"]`, "status:303"); r.status != http.StatusSeeOther || r.errs() != "" {
			t.Fatalf("redirect: %d %s", r.status, r.errs())
		}
		r := c.do("pop:flash", "has:flash")
		if string(r.result.Pop["flash"]) != `["saved","sent"]` || r.result.Has["flash"] || r.errs() != "" {
			t.Fatalf("after the redirect: pop %v, has %v, errs %s", r.result.Pop, r.result.Has, r.errs())
		}
		rec, err := h.stored(c.cookie)
		if err != nil || rec.Data["flash"] != nil || rec.Data["user"] == nil {
			t.Fatalf("stored after the pop: %v, %v", rec, err)
		}
		// Shown once: the next request finds nothing, and popping an absent
		// key writes nothing.
		_, applies := h.counts()
		if r := c.do("pop:flash"); len(r.result.Pop) != 0 || r.setCookie != nil {
			t.Errorf("second pop: %v, cookie %v", r.result.Pop, r.setCookie)
		}
		if _, a := h.counts(); a != applies {
			t.Errorf("popping an absent key cost %d writes", a-applies)
		}
	})

	t.Run("Pop: a session holding only the flash is deleted once it is shown", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do(`set:flash:"welcome"`)
		old := c.cookie
		r := c.do("pop:flash")
		if string(r.result.Pop["flash"]) != `"welcome"` || r.setCookie == nil || r.setCookie.MaxAge >= 0 {
			t.Fatalf("pop: %v, cookie %v; want the value and an expired cookie", r.result.Pop, r.setCookie)
		}
		if _, err := h.stored(old); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("emptied session still stored: %v", err)
		}
	})

	t.Run("Keys are sorted and Has follows the request's changes", func(t *testing.T) {
		h := setup(t, nil)
		c := h.client()
		c.do("set:b:2", "set:a:1", `set:é:"x"`)
		r := c.do("keys", "has:a", "has:zz", "del:a", "set:c:3", "keys", "has:a", "clear", "keys")
		want := [][]string{{"a", "b", "é"}, {"b", "c", "é"}, nil}
		if !slices.EqualFunc(r.result.Keys, want, slices.Equal) || r.result.Has["zz"] || r.result.Has["a"] {
			t.Errorf("keys %q, has %v; want %q and no a, zz", r.result.Keys, r.result.Has, want)
		}
		if r := h.client().do("keys", "has:a"); len(r.result.Keys[0]) != 0 || r.result.Has["a"] {
			t.Errorf("new session: keys %q, has %v", r.result.Keys, r.result.Has)
		}
	})

	t.Run("Load and Save: a job rotates a session and hands out the new token", func(t *testing.T) {
		h := setup(t, nil)
		ctx := context.Background()
		c := h.client()
		c.do(`set:user:"ada"`)
		old := c.cookie

		job, err := h.m.Load(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		s := pgsession.FromContext(job)
		var user string
		if ok, err := s.Get("user", &user); !ok || err != nil || user != "ada" {
			t.Fatalf("loaded user %q, %v, %v", user, ok, err)
		}
		if h.m.FromContext(job) != s {
			t.Fatal("Manager.FromContext and FromContext disagree")
		}
		if err := s.Set("job", 1); err != nil {
			t.Fatal(err)
		}
		if err := pgsession.RotateKey(job); err != nil {
			t.Fatal(err)
		}
		tok, err := h.m.Save(job)
		if err != nil || tok == "" || bytes.Equal(h.key(tok), h.key(old)) {
			t.Fatalf("Save = %q, %v; want a new token", tok, err)
		}
		if _, err := h.stored(old); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("the old token's row survived the rotation: %v", err)
		}
		if r := h.request(h.cookieName+"="+old, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("old token still works: %v", r.result.Get)
		}
		c.cookie = tok // the token is a cookie value too
		if r := c.do("get:user", "get:job"); string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["job"]) != "1" {
			t.Errorf("new token: %v", r.result.Get)
		}
		// Saved once: a second Save and later changes are refused.
		if _, err := h.m.Save(job); !errors.Is(err, pgsession.ErrAlreadySaved) {
			t.Errorf("second Save: %v, want ErrAlreadySaved", err)
		}
		if err := s.Set("late", true); !errors.Is(err, pgsession.ErrAlreadySaved) {
			t.Errorf("Set after Save: %v, want ErrAlreadySaved", err)
		}
	})

	t.Run("Load and Save: unchanged keeps the token, freeze writes nothing", func(t *testing.T) {
		h := setup(t, nil)
		ctx := context.Background()
		c := h.client()
		c.do(`set:user:"ada"`)
		tok := c.cookie
		_, applies := h.counts()

		job := mustLoadToken(t, h, ctx, tok)
		if got, err := h.m.Save(job); err != nil || got != tok {
			t.Errorf("unchanged: Save = %q, %v; want the same token", got, err)
		}
		job = mustLoadToken(t, h, ctx, tok)
		_ = pgsession.FromContext(job).Set("x", 1)
		_ = pgsession.FromContext(job).Clear()
		if err := pgsession.FreezeSession(job); err != nil {
			t.Fatal(err)
		}
		if got, err := h.m.Save(job); err != nil || got != tok {
			t.Errorf("frozen: Save = %q, %v; want the same token", got, err)
		}
		if _, a := h.counts(); a != applies {
			t.Errorf("%d writes, want none", a-applies)
		}
		if rec, err := h.stored(tok); err != nil || !sameData(rec.Data, raw("user", `"ada"`)) {
			t.Errorf("stored: %v, %v", rec, err)
		}
		// A changed session keeps its key, and the caller's token.
		job = mustLoadToken(t, h, ctx, tok)
		_ = pgsession.FromContext(job).Set("x", 2)
		if got, err := h.m.Save(job); err != nil || got != tok {
			t.Errorf("updated: Save = %q, %v; want the same token", got, err)
		}
		if rec, _ := h.stored(tok); string(rec.Data["x"]) != "2" {
			t.Errorf("update not stored: %v", rec.Data)
		}
	})

	t.Run("Load and Save: new, bad, expired and emptied sessions", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.IdleTimeout = time.Hour; c.TimeoutResolution = time.Minute })
		ctx := context.Background()
		// "" and tokens that do not verify: an empty session, no query.
		for _, tok := range []string{"", "garbage", signKey(t, h.cookieName, randomBytes(32), randomBytes(32))} {
			job := mustLoadToken(t, h, ctx, tok)
			if n := pgsession.FromContext(job).Len(); n != 0 {
				t.Errorf("token %.20q: %d keys", tok, n)
			}
			if got, err := h.m.Save(job); got != "" || err != nil {
				t.Errorf("token %.20q: empty Save = %q, %v", tok, got, err)
			}
		}
		if l, a := h.counts(); l != 0 || a != 0 {
			t.Errorf("%d loads, %d writes; want none", l, a)
		}
		// A new session gets a fresh token.
		job := mustLoadToken(t, h, ctx, "")
		_ = pgsession.FromContext(job).Set("user", "ada")
		tok, err := h.m.Save(job)
		if err != nil || tok == "" {
			t.Fatalf("new: Save = %q, %v", tok, err)
		}
		if r := h.request(h.cookieName+"="+tok, "get:user"); string(r.result.Get["user"]) != `"ada"` {
			t.Errorf("new token: %v", r.result.Get)
		}
		// Expired: empty, and the save removes the dead row.
		h.clock.Advance(2 * time.Hour)
		job = mustLoadToken(t, h, ctx, tok)
		if n := pgsession.FromContext(job).Len(); n != 0 {
			t.Errorf("expired session has %d keys", n)
		}
		if got, err := h.m.Save(job); got != "" || err != nil {
			t.Errorf("expired: Save = %q, %v", got, err)
		}
		if _, err := h.stored(tok); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("expired row still stored: %v", err)
		}
		// Emptied: deleted, token "".
		job = mustLoadToken(t, h, ctx, "")
		_ = pgsession.FromContext(job).Set("user", "bob")
		tok, _ = h.m.Save(job)
		job = mustLoadToken(t, h, ctx, tok)
		var user string
		if ok, err := pgsession.FromContext(job).Pop("user", &user); !ok || err != nil || user != "bob" {
			t.Fatalf("Pop = %v, %v, %q", ok, err, user)
		}
		if got, err := h.m.Save(job); got != "" || err != nil {
			t.Errorf("emptied: Save = %q, %v", got, err)
		}
		if _, err := h.stored(tok); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("emptied row still stored: %v", err)
		}
	})

	t.Run("Load and Save: errors", func(t *testing.T) {
		h := setup(t, nil)
		ctx := context.Background()
		c := h.client()
		c.do(`set:user:"ada"`)
		tok := c.cookie

		if _, err := h.m.Save(ctx); !errors.Is(err, pgsession.ErrNoSession) {
			t.Errorf("Save without Load: %v", err)
		}
		if r := c.do("save"); !strings.Contains(r.errs(), pgsession.ErrNoSession.Error()) {
			t.Errorf("Save of a middleware session: %q, want ErrNoSession", r.errs())
		}
		h.backend.failLoad.Store(true)
		got, err := h.m.Load(ctx, tok)
		h.backend.failLoad.Store(false)
		if !errors.Is(err, errInjected) || got != ctx {
			t.Errorf("Load with the backend down: %v, %v; want the error and ctx unchanged", got, err)
		}
		job := mustLoadToken(t, h, ctx, tok)
		_ = pgsession.FromContext(job).Set("x", 1)
		h.backend.failApply.Store(true)
		tok2, err := h.m.Save(job)
		h.backend.failApply.Store(false)
		if !errors.Is(err, errInjected) || tok2 != "" {
			t.Errorf("Save with the backend down: %q, %v", tok2, err)
		}
		// A context that ended saves nothing and says so.
		cctx, cancel := context.WithCancel(ctx)
		job = mustLoadToken(t, h, cctx, tok)
		_ = pgsession.FromContext(job).Set("x", 2)
		cancel()
		if _, err := h.m.Save(job); !errors.Is(err, context.Canceled) {
			t.Errorf("Save after cancel: %v, want context.Canceled", err)
		}
		// A concurrent logout wins: a change is refused with ErrStaleKey,
		// nothing revived; a job that changed nothing gets "" and no error.
		job = mustLoadToken(t, h, ctx, tok)
		reader := mustLoadToken(t, h, ctx, tok)
		c.do("clear")
		_ = pgsession.FromContext(job).Set("x", 3)
		if got, err := h.m.Save(job); got != "" || !errors.Is(err, pgsession.ErrStaleKey) {
			t.Errorf("Save of a change after a concurrent logout: %q, %v; want ErrStaleKey", got, err)
		}
		if _, err := h.m.Save(reader); err != nil { // it writes nothing, so it cannot tell
			t.Errorf("Save of no change after a concurrent logout: %v", err)
		}
		if _, err := h.stored(tok); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("logged-out session revived: %v", err)
		}
	})

	t.Run("two nested Managers: own data, own cookies, RotateKey rotates both", func(t *testing.T) {
		t.Parallel()
		h := newNestedHarness(t, newBackend(t), nil, func(*pgsession.Config) {})
		outer := h.outer.CookieName()
		r := h.request("", `set:user:"ada"`, `outer/set:theme:"dark"`)
		ock := cookieNamed(r, outer)
		if r.errs() != "" || r.setCookie == nil || ock == nil {
			t.Fatalf("errs %s, cookies %v", r.errs(), r.header.Values("Set-Cookie"))
		}
		if v := r.header.Values("Vary"); len(v) != 1 {
			t.Errorf("Vary %q, want Cookie once", v)
		}
		both := func(inner, outerValue string) string {
			return h.cookieName + "=" + inner + "; " + outer + "=" + outerValue
		}
		r0 := r
		r = h.request(both(r.setCookie.Value, ock.Value), "get:user", "get:theme", "outer/get:user", "outer/get:theme", "keys", "outer/keys")
		if !slices.EqualFunc(r.result.Keys, [][]string{{"user"}, {"theme"}}, slices.Equal) {
			t.Errorf("keys %q: each Manager should see only its own data", r.result.Keys)
		}
		if string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["theme"]) != `"dark"` || len(r.result.Get) != 2 {
			t.Errorf("get %v", r.result.Get)
		}
		// RotateKey rotates both; FreezeSession freezes both.
		ic, oc := r0.setCookie.Value, ock.Value
		r = h.request(both(ic, oc), "rotate")
		ic2, oc2 := r.setCookie, cookieNamed(r, outer)
		if ic2 == nil || oc2 == nil || bytes.Equal(h.key(ic2.Value), h.key(ic)) || bytes.Equal(h.outer.key(t, oc2.Value), h.outer.key(t, oc)) {
			t.Fatalf("rotate: cookies %v", r.header.Values("Set-Cookie"))
		}
		if r := h.request(both(ic, oc), "get:user", "outer/get:theme"); len(r.result.Get) != 0 {
			t.Errorf("old keys still work: %v", r.result.Get)
		}
		r = h.request(both(ic2.Value, oc2.Value), "get:user", "outer/get:theme")
		if string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["theme"]) != `"dark"` {
			t.Errorf("after rotation: %v", r.result.Get)
		}
		_, applies := h.counts()
		r = h.request(both(ic2.Value, oc2.Value), "freeze", "set:a:1", "outer/set:b:2", "outer/clear")
		if _, a := h.counts(); a != applies || len(r.header.Values("Set-Cookie")) != 0 {
			t.Errorf("frozen: %d writes, cookies %v", a-applies, r.header.Values("Set-Cookie"))
		}
		// Logging out of one leaves the other alone.
		r = h.request(both(ic2.Value, oc2.Value), "clear")
		if r.setCookie == nil || r.setCookie.MaxAge >= 0 || cookieNamed(r, outer) != nil {
			t.Errorf("inner logout: cookies %v", r.header.Values("Set-Cookie"))
		}
		if r := h.request(outer+"="+oc2.Value, "outer/get:theme", "get:user"); string(r.result.Get["theme"]) != `"dark"` || r.result.Get["user"] != nil {
			t.Errorf("after the inner logout: %v", r.result.Get)
		}
	})

	t.Run("two nested Managers with one cookie name fail every request", func(t *testing.T) {
		t.Parallel()
		var got error
		h := newNestedHarness(t, newBackend(t), func(c *pgsession.Config) {
			c.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
				got = err
				http.Error(w, "clash", http.StatusInternalServerError)
			}
		}, func(c *pgsession.Config) { c.Cookie.Name = "" }) // the default, like the inner one's
		if r := h.request("", "set:a:1"); r.status != http.StatusInternalServerError || !errors.Is(got, pgsession.ErrInvalidConfig) {
			t.Errorf("status %d, error %v; want 500 and ErrInvalidConfig", r.status, got)
		}
		if _, a := h.counts(); a != 0 {
			t.Errorf("%d writes", a)
		}
	})
}

func mustLoadToken(t *testing.T, h *harness, ctx context.Context, token string) context.Context {
	t.Helper()
	ctx, err := h.m.Load(ctx, token)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return ctx
}

// key returns the session key inside a cookie value signed for e.
func (e *Env) key(t *testing.T, value string) []byte {
	t.Helper()
	key, ok := e.keyOf(value)
	if !ok {
		t.Fatalf("cookie %q does not verify", value)
	}
	return key
}
