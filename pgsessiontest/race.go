package pgsessiontest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testRace checks the regenerate race: requests a client has in flight with
// its old key while another of its requests rotates the key (a login, a
// logout, a renewal). Whatever order the server runs them in and the
// responses arrive in, the client ends signed in as the rotation left it,
// no acknowledged write is lost, and the old key gains nothing: after a
// login or logout it reads and writes nothing, inside the grace window too.
func testRace(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)
	principal := func(c *pgsession.Config) { c.PrincipalKey = "user" }

	// The rotating request of each scenario, from the session set up by
	// its first ops, and what the session must hold after it.
	scenarios := []struct {
		name      string
		setup     []string // ops of the request that creates the session
		rotation  []string
		user      string // the user the client ends signed in as
		renewal   bool   // stale requests are served (else refused)
		carriedBy string // a key of the session before the rotation, kept by it
	}{
		{name: "login", setup: []string{`set:cart:[1]`}, rotation: []string{`set:user:"ada"`, "rotate"}, user: `"ada"`, carriedBy: "cart"},
		{name: "renewal", setup: []string{`set:user:"ada"`, `set:cart:[1]`}, rotation: []string{"rotate"}, user: `"ada"`, renewal: true, carriedBy: "cart"},
	}

	// Every order of the server's work: each of a writer and a reader with
	// the old cookie either loaded before the rotation and saved after it
	// (held), or arrived after it. Then every order in which the three
	// responses reach the client's cookie jar.
	for _, sc := range scenarios {
		t.Run(sc.name+": every server order and every arrival order", func(t *testing.T) {
			for _, heldWriter := range []bool{false, true} {
				for _, heldReader := range []bool{false, true} {
					t.Run(fmt.Sprintf("held writer %v, held reader %v", heldWriter, heldReader), func(t *testing.T) {
						h := setup(t, principal)
						raceOrders(t, h, sc.setup, sc.rotation, sc.user, sc.renewal, sc.carriedBy, heldWriter, heldReader)
					})
				}
			}
		})
	}

	for _, sc := range scenarios {
		t.Run(sc.name+" raced by 3 writers, 100 rounds: never logged out, nothing acknowledged lost", func(t *testing.T) {
			h := setup(t, principal)
			loggedOut, lost, refused := 0, 0, 0
			for round := range 100 {
				c := h.client()
				c.do(sc.setup...)
				j := &jar{value: c.cookie}
				old := c.cookieHeader()
				var wg sync.WaitGroup
				status := make([]int, 3)
				wg.Go(func() { j.apply(h.request(old, sc.rotation...)) })
				for i := range status {
					wg.Go(func() {
						r := h.request(old, fmt.Sprintf("set:w%d:%d", i, round))
						j.apply(r)
						status[i] = r.status
					})
				}
				wg.Wait()
				acked := make([]bool, 3)
				for i, st := range status {
					switch st {
					case http.StatusOK:
						acked[i] = true
					case http.StatusConflict:
						refused++
					default:
						t.Errorf("round %d writer %d: status %d", round, i, st)
					}
				}
				final := h.request(h.cookieName+"="+j.value, "get:user", "get:w0", "get:w1", "get:w2")
				if string(final.result.Get["user"]) != sc.user {
					loggedOut++
					continue
				}
				for i, ok := range acked {
					if ok && final.result.Get[fmt.Sprintf("w%d", i)] == nil {
						lost++
					}
				}
			}
			if loggedOut != 0 || lost != 0 {
				t.Errorf("100 rounds: %d ended logged out, %d acknowledged writes missing; want 0 and 0", loggedOut, lost)
			}
			if sc.renewal && refused != 0 {
				t.Errorf("%d writes refused across a renewal, want none", refused)
			}
			t.Logf("%d writes refused with 409 (a pre-login key writes nothing into the login)", refused)
		})
	}

	t.Run("fixation: after a login the pre-login key reads and writes nothing, inside the window", func(t *testing.T) {
		h := setup(t, principal)
		c := h.client()
		c.do(`set:cart:[1]`)
		pre := c.cookieHeader()
		c.do(`set:user:"ada"`, "rotate")
		if !h.predecessorOf(strings.TrimPrefix(pre, h.cookieName+"=")) {
			t.Fatal("the login's row does not remember the pre-login key as its predecessor")
		}
		for _, ops := range [][]string{{"get:user", "get:cart", "token"}, {"set:cart:[2]"}, {`set:user:"eve"`, "rotate"}, {"clear"}, {"rotate"}} {
			r := h.request(pre, ops...)
			if r.setCookie != nil || len(r.result.Get) != 0 || r.result.Token != "" {
				t.Errorf("pre-login key %v: cookie %v, read %v, token %q; want nothing", ops, r.setCookie, r.result.Get, r.result.Token)
			}
			if writes := ops[0] != "get:user" && ops[0] != "clear" && ops[0] != "rotate"; writes && r.status != http.StatusConflict {
				t.Errorf("pre-login key %v: status %d, want 409", ops, r.status)
			}
		}
		if r := c.do("get:user", "get:cart"); string(r.result.Get["user"]) != `"ada"` || string(r.result.Get["cart"]) != `[1]` {
			t.Errorf("the login's session after the pre-login key's attempts: %v", r.result.Get)
		}
		if st := h.m.Stats(); st.StaleKeys == 0 {
			t.Errorf("Stats.StaleKeys = 0 after requests with a retired key")
		}
	})

	t.Run("bearer: an app's calls across a renewal keep working, across a login they gain nothing", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.PrincipalKey, c.Carrier = "user", pgsession.BearerOnly })
		tok := h.send(http.Header{}, `set:user:"ada"`, "token").result.Token
		renewed := h.bearer(tok, "rotate", "token").result.Token
		if renewed == "" || renewed == tok {
			t.Fatalf("renewal token %q", renewed)
		}
		if r := h.bearer(tok, "set:n:1", "get:user", "token"); r.status != 200 || string(r.result.Get["user"]) != `"ada"` ||
			r.result.Token != "" || !strings.Contains(r.errs(), "changed by a concurrent request") {
			t.Errorf("old token after a renewal: %d %v, token %q, errs %q; want the session, and no token (ErrStaleKey)", r.status, r.result.Get, r.result.Token, r.errs())
		}
		if r := h.bearer(renewed, "get:n"); string(r.result.Get["n"]) != "1" {
			t.Errorf("the old token's write is not in the session: %v", r.result.Get)
		}
		other := h.bearer(renewed, `set:user:"bob"`, "rotate", "token").result.Token
		if r := h.bearer(renewed, "get:user", "set:x:1"); r.status != http.StatusConflict || len(r.result.Get) != 0 {
			t.Errorf("token retired by a change of user: %d %v; want 409 and nothing read", r.status, r.result.Get)
		}
		if r := h.bearer(other, "get:user", "get:x"); string(r.result.Get["user"]) != `"bob"` || r.result.Get["x"] != nil {
			t.Errorf("after the change of user: %v", r.result.Get)
		}
	})

	t.Run("after the window the predecessor is dead, and an older key at once", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.PrincipalKey, c.RotationGrace = "user", 10*time.Second })
		c := h.client()
		c.do(`set:user:"ada"`)
		k0 := c.cookieHeader()
		c.do("rotate")
		k1 := c.cookieHeader()
		c.do("rotate")
		if r := h.request(k0, "get:user"); len(r.result.Get) != 0 {
			t.Errorf("a key older than the predecessor reads %v", r.result.Get)
		}
		if r := h.request(k1, "get:user"); string(r.result.Get["user"]) != `"ada"` || r.setCookie != nil {
			t.Errorf("the predecessor inside the window: %v, cookie %v", r.result.Get, r.setCookie)
		}
		h.clock.Advance(10 * time.Second)
		r := h.request(k1, "get:user")
		if len(r.result.Get) != 0 {
			t.Errorf("the predecessor after the window reads %v", r.result.Get)
		}
		if r.setCookie == nil || r.setCookie.MaxAge >= 0 {
			t.Errorf("the predecessor after the window: cookie %v, want it expired (a dead key)", r.setCookie)
		}
		if r := c.do("get:user"); string(r.result.Get["user"]) != `"ada"` {
			t.Errorf("the current key: %v", r.result.Get)
		}
	})

	t.Run("logout, signing out a device and logging out everywhere beat stale keys: nothing comes back", func(t *testing.T) {
		h := setup(t, principal)
		for _, end := range []string{"logout", "sign out device", "everywhere"} {
			c := h.client()
			c.do(`set:user:"ada"`)
			old := c.cookieHeader()
			c.do("rotate") // a renewal: old is served inside the window
			held := h.hold(old, "held-"+end, "set:late:1")
			switch end {
			case "logout":
				c.do("clear")
			case "sign out device":
				rec, err := h.stored(c.cookie)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := h.m.DeleteSession(context.Background(), "ada", rec.SessionID); !ok || err != nil {
					t.Fatalf("DeleteSession: %v, %v", ok, err)
				}
			case "everywhere":
				if _, err := h.m.DeleteByPrincipal(context.Background(), "ada"); err != nil {
					t.Fatal(err)
				}
			}
			if r := held(); r.status != http.StatusConflict || r.setCookie != nil {
				t.Errorf("%s: a held stale write: %d, cookie %v; want 409 and no cookie", end, r.status, r.setCookie)
			}
			for _, k := range []string{old, c.cookieHeader()} {
				if k == "" {
					continue
				}
				if r := h.request(k, "get:user", "set:back:1"); string(r.result.Get["user"]) == `"ada"` {
					t.Errorf("%s: a key of the ended session still reads %v", end, r.result.Get)
				}
			}
			if list, err := h.m.ListByPrincipal(context.Background(), "ada"); err != nil || len(list) != 0 {
				t.Errorf("%s: sessions of ada afterwards: %d, %v", end, len(list), err)
			}
		}
	})

	t.Run("a dead cookie is expired; a predecessor's is not", func(t *testing.T) {
		h := setup(t, principal)
		c := h.client()
		c.do(`set:user:"ada"`)
		gone := c.cookieHeader()
		if _, err := h.m.DeleteByPrincipal(context.Background(), "ada"); err != nil {
			t.Fatal(err)
		}
		if r := h.request(gone, "get:user"); r.setCookie == nil || r.setCookie.MaxAge >= 0 || len(r.result.Get) != 0 {
			t.Errorf("a cookie of a deleted session: cookie %v, read %v; want it expired", r.setCookie, r.result.Get)
		}
		c = h.client()
		c.do(`set:cart:[1]`)
		pre := c.cookieHeader()
		c.do(`set:user:"ada"`, "rotate")
		if r := h.request(pre, "get:user"); r.setCookie != nil {
			t.Errorf("a pre-login cookie inside the window: cookie %v, want none (the client holds the login's)", r.setCookie)
		}
	})

	t.Run("RenewAfter renews a signed-in key, keeps the absolute timeout, and keeps requests in flight working", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.PrincipalKey, c.RenewAfter = "user", time.Hour
			c.IdleTimeout, c.AbsoluteTimeout, c.TimeoutResolution = 8*time.Hour, 3*time.Hour, time.Minute
		})
		anon := h.client()
		anon.do("set:cart:[1]")
		c := h.client()
		c.do(`set:user:"ada"`)
		h.clock.Advance(59 * time.Minute)
		if r := c.do("get:user"); r.setCookie != nil && !bytes.Equal(h.key(r.setCookie.Value), h.key(c.cookie)) {
			t.Errorf("renewed before RenewAfter")
		}
		h.clock.Advance(time.Minute)
		old := c.cookieHeader()
		held := h.hold(old, "in-flight", "set:late:1")
		r := c.do("get:user")
		if r.setCookie == nil || r.setCookie.MaxAge <= 0 || bytes.Equal(h.key(r.setCookie.Value), h.key(strings.TrimPrefix(old, h.cookieName+"="))) {
			t.Fatalf("no renewal at RenewAfter: cookie %v", r.setCookie)
		}
		if r := held(); r.status != 200 || r.setCookie != nil {
			t.Errorf("a request in flight across the renewal: %d, cookie %v; want 200 and none", r.status, r.setCookie)
		}
		if r := h.request(old, "get:late"); string(r.result.Get["late"]) != "1" || r.setCookie != nil {
			t.Errorf("the old key inside the window: %v, cookie %v", r.result.Get, r.setCookie)
		}
		if r := anon.do("get:cart"); r.setCookie != nil {
			t.Errorf("an anonymous session was renewed: %v", r.setCookie)
		}
		// The renewal kept the creation time: the absolute timeout (3h)
		// ends the session 3h after the login, not after the renewal.
		h.clock.Advance(2 * time.Hour)
		if r := c.do("get:user"); len(r.result.Get) != 0 {
			t.Errorf("the absolute timeout restarted at the renewal: %v", r.result.Get)
		}
	})

	t.Run("RenewAfter: Token hands out the renewed key; a bearer request is not renewed", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.PrincipalKey, c.RenewAfter, c.Carrier = "user", time.Hour, pgsession.CookieOrBearer
		})
		c := h.client()
		tok := c.do(`set:user:"ada"`, "token").result.Token
		h.clock.Advance(time.Hour)
		if r := h.bearer(tok, "get:user", "token"); r.result.Token == "" || !bytes.Equal(h.key(r.result.Token), h.key(tok)) {
			t.Errorf("a bearer request was renewed: token %q", r.result.Token)
		}
		old := c.cookie
		r := c.do("token")
		if r.setCookie == nil || r.result.Token == "" || !bytes.Equal(h.key(r.result.Token), h.key(r.setCookie.Value)) ||
			bytes.Equal(h.key(r.setCookie.Value), h.key(old)) {
			t.Errorf("renewal: token %q, cookie %v; want the cookie's new key in both", r.result.Token, r.setCookie)
		}
	})
}

// jar is a client's cookie jar, applying Set-Cookies in the order the
// responses arrive.
type jar struct {
	mu    sync.Mutex
	value string
}

func (j *jar) apply(r response) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if ck := r.setCookie; ck != nil {
		j.value = ck.Value
		if ck.MaxAge < 0 {
			j.value = ""
		}
	}
}

// raceOrders runs one server order of a rotation with a writer and a
// reader carrying the old cookie, then checks every arrival order of the
// three responses.
func raceOrders(t *testing.T, h *harness, setup, rotation []string, user string, renewal bool, carried string, heldWriter, heldReader bool) {
	c := h.client()
	c.do(setup...)
	old := c.cookieHeader()
	var writer, reader func() response
	if heldWriter {
		writer = h.hold(old, "writer", "set:seen:1")
	}
	if heldReader {
		reader = h.hold(old, "reader", "get:cart", "get:user")
	}
	rot := h.request(old, rotation...)
	if rot.status != 200 || rot.setCookie == nil {
		t.Fatalf("rotation: %d, cookie %v", rot.status, rot.setCookie)
	}
	if writer == nil {
		writer = func() response { return h.request(old, "set:seen:1") }
	}
	if reader == nil {
		reader = func() response { return h.request(old, "get:cart", "get:user") }
	}
	responses := []response{rot, writer(), reader()}
	w, r := responses[1], responses[2]
	switch {
	case renewal && w.status != 200:
		t.Errorf("a write with the predecessor of a renewal: %d %s", w.status, w.body)
	case !renewal && w.status != http.StatusConflict:
		t.Errorf("a write with the pre-login key: %d; want 409", w.status)
	}
	if r.status != 200 || (renewal && string(r.result.Get["user"]) != user) || (!renewal && !heldReader && len(r.result.Get) != 0) {
		t.Errorf("a read with the old key: %d %v (renewal %v)", r.status, r.result.Get, renewal)
	}
	for _, order := range [][3]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		j := &jar{value: strings.TrimPrefix(old, h.cookieName+"=")}
		for _, i := range order {
			j.apply(responses[i])
		}
		if j.value != rot.setCookie.Value {
			t.Errorf("arrival order %v: the client ends with another cookie than the rotation's", order)
			continue
		}
		got := h.request(h.cookieName+"="+j.value, "get:user", "get:seen", "get:"+carried)
		if string(got.result.Get["user"]) != user || got.result.Get[carried] == nil {
			t.Errorf("arrival order %v: the client's session %v; want user %s and %s", order, got.result.Get, user, carried)
		}
		if acked := w.status == 200; acked != (got.result.Get["seen"] != nil) {
			t.Errorf("arrival order %v: write answered %d, stored %v", order, w.status, got.result.Get["seen"] != nil)
		}
	}
}
