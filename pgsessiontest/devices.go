package pgsessiontest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// testLifetimesAndDevices checks per-session lifetimes (SetLifetime) and the
// device list with its sign-out calls.
func testLifetimesAndDevices(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	setup := parallelHarness(newBackend)
	ctx := context.Background()

	t.Run("SetLifetime: remember me, and timeouts the server enforces per session", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.Cookie.SessionOnly = true })
		remembered, plain, admin := h.client(), h.client(), h.client()
		r := remembered.do(`set:user:"a"`, "lifetime:720h,2160h,true")
		if ck := r.setCookie; ck == nil || ck.MaxAge != int((2160*time.Hour).Seconds()) || r.errs() != "" {
			t.Fatalf("remember me: cookie %+v, errs %s; want Max-Age 90 days (its absolute timeout) despite SessionOnly", ck, r.errs())
		}
		if ck := plain.do(`set:user:"b"`).setCookie; ck == nil || ck.MaxAge != 0 || !ck.Expires.IsZero() {
			t.Fatalf("without a lifetime: cookie %+v, want a browser-session cookie (SessionOnly)", ck)
		}
		if ck := admin.do(`set:user:"root"`, "lifetime:1m,1h,false").setCookie; ck == nil || ck.MaxAge != 0 {
			t.Fatalf("short lifetime, not persistent: cookie %+v", ck)
		}
		h.clock.Advance(2 * time.Minute)
		if r := admin.do("get:user"); len(r.result.Get) != 0 {
			t.Errorf("a session past its own 1m idle timeout still loads: %v", r.result.Get)
		}
		h.clock.Advance(9 * time.Hour) // past Config's 8h idle timeout
		// The sweep removes the plain session (Config's timeout), keeps
		// the remembered one (its own 30 days).
		if n, err := h.m.DeleteExpired(ctx); err != nil || n != 1 {
			t.Errorf("DeleteExpired = %d, %v; want 1 (the session following Config)", n, err)
		}
		if _, err := h.stored(plain.cookie); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("the plain session's row: %v, want ErrNotFound", err)
		}
		r = remembered.do("get:user", "rotate")
		if string(r.result.Get["user"]) != `"a"` || r.setCookie == nil || r.setCookie.MaxAge != int((2160*time.Hour).Seconds()) {
			t.Fatalf("remembered after 9h: saw %v, rotated cookie %+v; want the session, and its 90-day lifetime kept by rotation", r.result.Get, r.setCookie)
		}
		// A new lifetime alone is a change: written, and the cookie follows.
		r = remembered.do("lifetime:1h,0s,false")
		if r.setCookie == nil || r.setCookie.MaxAge != 0 {
			t.Fatalf("new lifetime: cookie %+v, want a browser-session cookie", r.setCookie)
		}
		rec, err := h.stored(remembered.cookie)
		if err != nil || rec.Lifetime == nil || rec.Lifetime.IdleTimeout != time.Hour ||
			rec.Lifetime.AbsoluteTimeout != pgsession.DefaultAbsoluteTimeout || rec.Lifetime.Persistent {
			t.Fatalf("stored lifetime %+v, %v; want 1h idle, Config's absolute timeout, not persistent", rec, err)
		}
		h.clock.Advance(2 * time.Hour) // past its own 1h, within Config's absolute timeout
		if n, err := h.m.DeleteExpired(ctx); err != nil || n != 1 {
			t.Errorf("DeleteExpired after the own idle timeout = %d, %v; want 1", n, err)
		}
		if r := remembered.do("get:user"); len(r.result.Get) != 0 {
			t.Errorf("swept session still loads: %v", r.result.Get)
		}
		if r := h.client().do(`set:x:1`, "lifetime:-1s,-1s,true"); r.setCookie == nil || r.setCookie.MaxAge != 0 || r.errs() != "" {
			t.Errorf("no timeouts at all: cookie %+v, errs %s; want no expiry to put on it", r.setCookie, r.errs())
		}
	})

	t.Run("devices: list, sign out one, sign out the others", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) {
			c.PrincipalKey = "user_id"
			c.Device = pgsession.DeviceFromRequest(func(r *http.Request) string { return r.RemoteAddr })
		})
		if _, ok := h.backend.Backend.(backend.PrincipalBackend); !ok {
			t.Skip("backend does not implement backend.PrincipalBackend")
		}
		phone, laptop, tablet, other := h.client(), h.client(), h.client(), h.client()
		for _, c := range []*client{phone, laptop, tablet} {
			c.do("set:user_id:42")
			h.clock.Advance(time.Minute)
		}
		other.do("set:user_id:7")
		list, err := h.m.ListByPrincipal(ctx, 42)
		if err != nil || len(list) != 3 {
			t.Fatalf("ListByPrincipal = %+v, %v; want 3 devices", list, err)
		}
		ids := map[pgsession.SessionID]bool{}
		for _, d := range list {
			ids[d.ID] = true
			if d.Device.UserAgent != "Go-http-client/1.1" || !strings.HasPrefix(d.Device.Addr, "127.0.0.1:") || d.Current {
				t.Errorf("device %+v: want the client's user agent and address, not current", d)
			}
		}
		if len(ids) != 3 {
			t.Fatalf("device IDs not distinct: %+v", list)
		}
		tabletID, laptopID := list[0].ID, list[1].ID // most recent first
		// The ID lasts across rotations, and the list marks the caller.
		r := tablet.do("rotate", "current")
		if got := strings.Trim(string(r.result.Get["current"]), `"`); got != tabletID.String() {
			t.Errorf("after a rotation the current device is %q, want %s", got, tabletID)
		}
		if parsed, err := pgsession.ParseSessionID(tabletID.String()); err != nil || parsed != tabletID {
			t.Errorf("ParseSessionID(String()) = %v, %v", parsed, err)
		}
		if _, err := pgsession.ParseSessionID("zz"); !errors.Is(err, pgsession.ErrInvalidValue) {
			t.Errorf("ParseSessionID(zz) = %v, want ErrInvalidValue", err)
		}
		// Sign out one device: only the owner can.
		if ok, err := h.m.DeleteSession(ctx, 7, laptopID); ok || err != nil {
			t.Errorf("another user's DeleteSession = %v, %v; want false", ok, err)
		}
		if r := laptop.do("get:user_id"); len(r.result.Get) == 0 {
			t.Fatal("the laptop was signed out by another user")
		}
		if ok, err := h.m.DeleteSession(ctx, 42, laptopID); !ok || err != nil {
			t.Errorf("DeleteSession = %v, %v; want true", ok, err)
		}
		if r := laptop.do("get:user_id"); len(r.result.Get) != 0 {
			t.Errorf("signed-out laptop still works: %v", r.result.Get)
		}
		// Sign out the others, from the phone.
		if r := phone.do("others", "get:user_id"); r.errs() != "" || string(r.result.Get["user_id"]) != "42" {
			t.Fatalf("DeleteOtherSessions: errs %s, saw %v", r.errs(), r.result.Get)
		}
		if r := tablet.do("get:user_id"); len(r.result.Get) != 0 {
			t.Errorf("tablet survived signing out the others: %v", r.result.Get)
		}
		if r := phone.do("get:user_id"); string(r.result.Get["user_id"]) != "42" {
			t.Errorf("the phone signed itself out: %v", r.result.Get)
		}
		if r := other.do("get:user_id"); string(r.result.Get["user_id"]) != "7" {
			t.Errorf("another user's session was deleted: %v", r.result.Get)
		}
		if r := h.client().do("set:x:1", "others"); !strings.Contains(r.errs(), pgsession.ErrNoPrincipal.Error()) {
			t.Errorf("DeleteOtherSessions without a principal: %q, want ErrNoPrincipal", r.errs())
		}
	})

	t.Run("signing out one device or the others beats concurrent rotations", func(t *testing.T) {
		h := setup(t, func(c *pgsession.Config) { c.PrincipalKey = "user_id" })
		if _, ok := h.backend.Backend.(backend.PrincipalBackend); !ok {
			t.Skip("backend does not implement backend.PrincipalBackend")
		}
		for round := range 10 {
			keeper, victim := h.client(), h.client()
			keeper.do(`set:user_id:"alice"`)
			victim.do(`set:user_id:"alice"`)
			victimID, err := pgsession.ParseSessionID(strings.Trim(string(victim.do("current").result.Get["current"]), `"`))
			if err != nil {
				t.Fatalf("round %d: the victim's session ID: %v", round, err)
			}
			done, stop := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						victim.do("rotate")
						return
					default:
					}
					victim.do("rotate")
				}
			}()
			time.Sleep(time.Duration(round%4) * time.Millisecond)
			if round%2 == 0 {
				if ok, err := h.m.DeleteSession(ctx, "alice", victimID); err != nil || !ok {
					t.Fatalf("round %d: DeleteSession = %v, %v", round, ok, err)
				}
			} else if r := keeper.do("others"); r.errs() != "" {
				t.Fatalf("round %d: DeleteOtherSessions: %s", round, r.errs())
			}
			close(stop)
			<-done
			if r := victim.do("get:user_id"); len(r.result.Get) != 0 {
				t.Fatalf("round %d: the rotating device survived being signed out: %v", round, r.result.Get)
			}
			if r := keeper.do("get:user_id"); len(r.result.Get) == 0 {
				t.Fatalf("round %d: the keeper was signed out", round)
			}
			keeper.do("clear")
		}
	})
}
