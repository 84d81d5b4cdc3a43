package main

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// login logs c in as name, with "Remember me" ticked or not, and returns
// the session cookie the login's own response (the 303) set and the page
// it redirected to.
func (c *client) login(name string, remember bool) (*http.Cookie, string) {
	c.t.Helper()
	form := url.Values{"name": {name}}
	if remember {
		form.Set("remember", "on")
	}
	resp, body := c.do(http.MethodPost, "/login", form, http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {c.f.srv.URL}})
	if resp.StatusCode != http.StatusOK || resp.Request.Response == nil || resp.Request.Response.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("POST /login: %d %s, want 200 after a 303", resp.StatusCode, body)
	}
	ck := sessionCookie(resp.Request.Response.Cookies())
	if ck == nil {
		c.t.Fatalf("the login set no session cookie: %q", resp.Request.Response.Header["Set-Cookie"])
	}
	return ck, body
}

// "Remember me" makes a cookie that lasts 30 days and a session the server
// keeps for 30 days of inactivity; without it, a browser-session cookie and
// Config's idle timeout (8 hours). A later login without the tick takes
// the long lifetime away again.
func TestExampleRememberMe(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend.Backend) {
		f := serve(t, b, true, false)
		const month = 30 * 24 * time.Hour

		remembered, forgotten := f.client(t), f.client(t)
		ck, _ := remembered.login("ada", true)
		if got := time.Duration(ck.MaxAge) * time.Second; got < month-time.Minute || got > month {
			t.Errorf("remember me: cookie Max-Age %v, want about %v", got, month)
		}
		if ck.Expires.IsZero() {
			t.Errorf("remember me: cookie without Expires: %v", ck)
		}
		ck, _ = forgotten.login("bob", false)
		if ck.MaxAge != 0 || !ck.Expires.IsZero() {
			t.Errorf("without remember me: cookie %v, want a browser-session cookie (no Max-Age, no Expires)", ck)
		}
		// The page after the login keeps the key: no cookie sent again.
		for _, c := range []*client{remembered, forgotten} {
			if resp, _ := c.do(http.MethodGet, "/", nil, nil); sessionCookie(resp.Cookies()) != nil {
				t.Errorf("a counted visit sent the session cookie again: %q", resp.Header["Set-Cookie"])
			}
		}

		// Nine hours later, past the default idle timeout: only the
		// remembered session is alive.
		f.clock.Advance(9 * time.Hour)
		wantContains(t, "remembered, 9 hours later", remembered.page("/"), "Logged in as <b>ada</b>")
		wantContains(t, "not remembered, 9 hours later", forgotten.page("/"), anonymous)

		// A new login without the tick: a browser-session cookie again.
		ck, _ = remembered.login("ada", false)
		if ck.MaxAge != 0 || !ck.Expires.IsZero() {
			t.Errorf("second login without remember me: cookie %v, want a browser-session cookie", ck)
		}
	})
}

// The flash message after login is shown once, on the page the login
// redirects to. After a logout the message is all that is left of the
// session; showing it deletes it, so nothing remains stored.
func TestExampleFlash(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		f := serve(t, s.backend, true, false)
		c := f.client(t)

		_, body := c.login("<ada>", true)
		wantContains(t, "after login", body, flash("Welcome, &lt;ada&gt;"), "Logged in as <b>&lt;ada&gt;</b>")
		if strings.Count(body, noFlash) != 1 {
			t.Errorf("the page after login shows the message %d times", strings.Count(body, noFlash))
		}
		if body := c.page("/"); strings.Contains(body, noFlash) {
			t.Errorf("the welcome message is shown again:\n%s", body)
		}

		// Logout. The response carries a browser-session cookie for the
		// message, even though the login was remembered.
		resp, body := c.do(http.MethodPost, "/logout", nil, http.Header{"Sec-Fetch-Site": {"same-origin"}})
		wantContains(t, "after logout", body, flash("You are signed out."), anonymous)
		redirect := resp.Request.Response
		if redirect == nil || redirect.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout did not redirect with 303: %v", redirect)
		}
		if ck := sessionCookie(redirect.Cookies()); ck == nil || ck.MaxAge != 0 || !ck.Expires.IsZero() {
			t.Errorf("logout set the cookie %v, want a browser-session cookie for the message", ck)
		}
		// The page showing the message deleted the session and its cookie.
		if ck := sessionCookie(resp.Cookies()); ck == nil || ck.MaxAge >= 0 {
			t.Errorf("the page showing the message set the cookie %v, want it expired", ck)
		}
		if ck := c.cookie(); ck != nil {
			t.Errorf("after the message, the browser holds the cookie %v", ck)
		}
		if s.rows != nil {
			if n := s.rows(t); n != 0 {
				t.Errorf("%d sessions remain after the logout message was shown, want none", n)
			}
		}
		resp, body = c.do(http.MethodGet, "/", nil, nil)
		if strings.Contains(body, noFlash) || len(resp.Header["Set-Cookie"]) != 0 {
			t.Errorf("the next page: Set-Cookie %q, page\n%s\nwant no cookie and no message", resp.Header["Set-Cookie"], body)
		}
		if st := f.m.Stats(); st.Deletes != 1 {
			t.Errorf("stats %+v, want the one deletion of the message's session", st)
		}
	})
}

// signOutForms matches the per-device sign-out forms of the devices page.
var signOutForms = regexp.MustCompile(`action="/devices/([0-9a-f]{32})/signout"`)

// sessionRow returns the row of the devices page for the browser agent, or
// "".
func sessionRow(page, agent string) string {
	for _, row := range strings.Split(page, `<tr class="session">`)[1:] {
		if strings.Contains(row, `<td class="agent">`+agent) {
			row, _, _ = strings.Cut(row, "</tr>")
			return row
		}
	}
	return ""
}

// The devices page lists the user's sessions with their browsers and
// marks the current one; a user can sign out one device (only their own)
// or all the others.
func TestExampleDevices(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		f := serve(t, s.backend, true, false)
		newClient := func(agent string) *client {
			c := f.client(t)
			c.agent = agent
			return c
		}
		phone, laptop, mallory := newClient("Phone/1.0 <b>"), newClient("Laptop/2.0"), newClient("Mallory/6.6")
		phone.post("/login", url.Values{"name": {"ada"}})
		laptop.post("/login", url.Values{"name": {"ada"}, "remember": {"on"}})
		mallory.post("/login", url.Values{"name": {"mallory"}})

		page := laptop.page("/devices")
		if n := strings.Count(page, `<tr class="session">`); n != 2 {
			t.Fatalf("the devices page lists %d sessions, want 2:\n%s", n, page)
		}
		if strings.Contains(page, "Mallory") {
			t.Errorf("ada's devices page shows another user's session:\n%s", page)
		}
		phoneRow, laptopRow := sessionRow(page, "Phone/1.0 &lt;b&gt;"), sessionRow(page, "Laptop/2.0")
		if phoneRow == "" || laptopRow == "" {
			t.Fatalf("the devices page lacks a row for each browser (the phone's escaped):\n%s", page)
		}
		wantContains(t, "the laptop's row", laptopRow, "(this device)", `<td class="addr">127.0.0.1</td>`)
		wantContains(t, "the phone's row", phoneRow, `<td class="addr">127.0.0.1</td>`, "/signout")
		if strings.Contains(phoneRow, "(this device)") || strings.Contains(laptopRow, "/signout") {
			t.Errorf("the phone's row:\n%s\nthe laptop's row:\n%s\nwant the laptop marked current, without a sign-out button", phoneRow, laptopRow)
		}
		ids := signOutForms.FindAllStringSubmatch(page, -1)
		if len(ids) != 1 {
			t.Fatalf("the devices page has %d sign-out forms, want 1 (the phone's)", len(ids))
		}
		phoneID := ids[0][1]

		// Mallory, who knows (or guesses) the ID of ada's phone session,
		// cannot sign it out.
		body := mallory.post("/devices/"+phoneID+"/signout", url.Values{})
		wantContains(t, "mallory's forged sign-out", body, flash("That device was already signed out."))
		wantContains(t, "the phone after mallory's attempt", phone.page("/"), "Logged in as <b>ada</b>")
		if resp, _ := mallory.do(http.MethodPost, "/devices/xyz/signout", url.Values{}, http.Header{"Sec-Fetch-Site": {"same-origin"}}); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a malformed session ID: %d, want 400", resp.StatusCode)
		}

		// The laptop signs out the phone: exactly that session ends.
		body = laptop.post("/devices/"+phoneID+"/signout", url.Values{})
		wantContains(t, "after signing out the phone", body, flash("Signed out 1 device."), "(this device)")
		if n := strings.Count(body, `<tr class="session">`); n != 1 {
			t.Errorf("after signing out the phone, the page lists %d sessions, want 1", n)
		}
		wantContains(t, "the phone afterwards", phone.page("/"), anonymous)
		wantContains(t, "the laptop afterwards", laptop.page("/"), "Logged in as <b>ada</b>")
		wantContains(t, "mallory afterwards", mallory.page("/"), "Logged in as <b>mallory</b>")
		if body := laptop.page("/devices"); strings.Contains(body, noFlash) {
			t.Errorf("the message is shown again:\n%s", body)
		}

		// Two more devices; the laptop signs out all the others.
		tablet := newClient("Tablet/3.0")
		phone.post("/login", url.Values{"name": {"ada"}})
		tablet.post("/login", url.Values{"name": {"ada"}})
		body = laptop.post("/devices/signout-others", url.Values{})
		wantContains(t, "after signing out the others", body, flash("Signed out 2 other devices."), "(this device)")
		if n := strings.Count(body, `<tr class="session">`); n != 1 {
			t.Errorf("after signing out the others, the page lists %d sessions, want 1", n)
		}
		for _, c := range []*client{phone, tablet} {
			wantContains(t, c.agent+" afterwards", c.page("/"), anonymous)
		}
		wantContains(t, "the laptop afterwards", laptop.page("/"), "Logged in as <b>ada</b>")
		wantContains(t, "mallory afterwards", mallory.page("/"), "Logged in as <b>mallory</b>")
		if s.rows != nil {
			if n := s.rows(t); n != 2 {
				t.Errorf("%d sessions stored, want 2 (ada's laptop and mallory)", n)
			}
		}

		// Anonymous visitors are sent to the start page.
		wantContains(t, "anonymous /devices", f.client(t).page("/devices"), anonymous)
	})
}
