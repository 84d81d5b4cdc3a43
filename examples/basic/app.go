package main

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// The session keys the example uses. userKey is also the Manager's
// PrincipalKey, so the devices page can list and sign out the user's
// sessions, and a change of user rotates the key even without RotateKey.
// flashKey holds a message for the next page, which shows it once (Pop).
const (
	userKey    = "user"
	visitsKey  = "visits"
	streamsKey = "streams"
	flashKey   = "flash"
)

// rememberMe is the lifetime of a session whose user ticked "Remember me":
// 30 days after its last use (at most Config's absolute timeout, 30 days by
// default, after the login), in a cookie that survives a browser restart.
// Without the tick a session gets Config's timeouts in a browser-session
// cookie, which the browser forgets when it closes.
var rememberMe = pgsession.Lifetime{IdleTimeout: 30 * 24 * time.Hour, Persistent: true}

// flashOnly is the lifetime of the session that carries the "You are signed
// out" message from a logout to the page it redirects to. That session
// holds the message only, and the page deletes it by popping the message,
// so it normally lives for one redirect; if the redirect is never
// followed, it expires after a few minutes and the janitor removes it.
var flashOnly = pgsession.Lifetime{IdleTimeout: 5 * time.Minute, AbsoluteTimeout: 5 * time.Minute}

// The server-sent event stream: this many events, this far apart, then the
// stream ends.
const (
	eventCount    = 3
	eventInterval = 200 * time.Millisecond
)

// statsVar is the name under which /debug/vars shows the Manager's Stats,
// in the shape of expvar's output ({"name": value}) so that tools which read
// expvar can read it.
const statsVar = "pgsession"

// managerConfig returns the example's session configuration: defaults
// everywhere except the principal and the device record. The cookie keeps
// the Secure attribute unless insecureCookie is set (see the package
// documentation).
func managerConfig(b backend.Backend, hashKeys [][]byte, insecureCookie bool, log *slog.Logger) pgsession.Config {
	return pgsession.Config{
		Backend:      b,
		HashKeys:     hashKeys,
		PrincipalKey: userKey,
		// The browser and address of each session, for the devices page.
		// Both are personal data: record them only to show them to their
		// owner, and say so in your privacy notice.
		Device: pgsession.DeviceFromRequest(clientAddr),
		Cookie: pgsession.CookieConfig{Insecure: insecureCookie},
		Logger: log,
		// The default answers, with the security headers: a failed save
		// clears the headers of the response it replaces. A change refused
		// because a concurrent request rotated the key (a login, logout or
		// renewal while the page had requests in flight: ErrStaleKey) gets
		// 409 Conflict, which the page may retry with the cookie it now
		// holds; any other error 500.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			setSecurityHeaders(w.Header())
			code := http.StatusInternalServerError
			if errors.Is(err, pgsession.ErrStaleKey) {
				code = http.StatusConflict
			}
			http.Error(w, http.StatusText(code), code)
		},
	}
}

// contentSecurityPolicy allows the pages to load scripts, styles, images
// and connections (the event stream) from the app's own origin only, and
// no inline script or style; forms may post to the app only, and no page
// may be framed (frame-ancestors). X-Frame-Options says the same to
// browsers that predate frame-ancestors.
const contentSecurityPolicy = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"

// setSecurityHeaders adds to h the headers every response of the example
// carries.
//
// Framing is the one that matters most here. A page the session cookie
// reaches (SameSite=Lax lets it reach pages of the same site: another port
// or subdomain, a compromised or user-content host beside the app) could
// show the devices page in an invisible frame and lay it under a button of
// its own, so the victim's click lands on "Log out everywhere" or "Sign
// out" (clickjacking). http.CrossOriginProtection does not see it: the
// click submits the app's own form from the app's own page, a same-origin
// POST. Refusing to be framed (X-Frame-Options: DENY, CSP frame-ancestors
// 'none') stops it in the browser.
//
// nosniff makes the browser trust the Content-Type, so a response is never
// run as a script or stylesheet it is not; Referrer-Policy keeps the app's
// URLs (which name session IDs on the devices page) from other sites.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
}

// securityHeaders sets the security headers on every response of next,
// before next runs, so error pages, redirects and the cross-origin
// refusal carry them too.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

// static holds the stylesheet and the start page's script, served from the
// app's own origin as the Content-Security-Policy requires.
//
//go:embed static
var static embed.FS

// clientAddr returns the address of the client of r as the devices page
// shows it: the connection's peer, since the example has no proxy in
// front of it. Behind a reverse proxy or load balancer that would be the
// proxy's address for every session; there the application must take the
// client's address from the forwarded header its own proxy sets
// (X-Forwarded-For, Forwarded), trusting only the entries that proxy
// added, since a client can send any header it likes.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// app is the example's handlers around one Manager.
type app struct {
	m   *pgsession.Manager
	log *slog.Logger
}

// newApp returns the example's whole handler for m. The pages run inside
// the session middleware, itself behind cross-origin protection: a
// cross-site POST is refused with 403 before any session is loaded.
// /debug/vars and the stylesheet and script under /static/ run outside
// both, so monitoring and static files never create or extend a session.
// Every response carries the security headers (see setSecurityHeaders).
//
// Only a login stores a session. Anonymous visitors read nothing from the
// store and write nothing to it, so a crawler or a flood of requests
// cannot fill the sessions table (see "Limits" in the README). The one
// exception is the message after a logout: it is kept in a small session
// without a user until the next page shows it, which deletes it (see
// signOut).
//
// It keeps no global state, so tests can build as many as they like.
func newApp(m *pgsession.Manager, log *slog.Logger) http.Handler {
	a := &app{m: m, log: log}

	pages := http.NewServeMux()
	pages.HandleFunc("GET /{$}", a.home)
	pages.HandleFunc("GET /login", a.loginPage)
	pages.HandleFunc("POST /login", a.login)
	pages.HandleFunc("POST /logout", a.logout)
	pages.HandleFunc("POST /logout-everywhere", a.logoutEverywhere)
	pages.HandleFunc("GET /devices", a.devices)
	pages.HandleFunc("POST /devices/{id}/signout", a.signOutDevice)
	pages.HandleFunc("POST /devices/signout-others", a.signOutOthers)
	pages.HandleFunc("GET /events", a.events)
	pages.HandleFunc("GET /healthz", a.healthz)

	root := http.NewServeMux()
	root.HandleFunc("GET /debug/vars", a.vars)
	root.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "static/"+r.PathValue("file"))
	})
	root.Handle("/", http.NewCrossOriginProtection().Handler(m.Middleware(pages)))
	return securityHeaders(root)
}

// templates are the example's pages. html/template escapes every value
// for where it appears, so a user name, a user agent or a message cannot
// inject markup.
var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`
{{define "flash"}}{{with .}}<p id="flash" role="status">{{.}}</p>
{{end}}{{end}}

{{define "top"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.}} · pgsession example</title>
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<header class="bar"><a class="brand" href="/">pgsession example</a>
<nav><a href="/">Start</a><a href="/devices">Devices</a></nav></header>
<main>
{{end}}

{{define "bottom"}}</main>
<footer><a href="/debug/vars">Session statistics</a> · <a href="/healthz">Health check</a></footer>
</body></html>
{{end}}

{{define "loginform"}}<form class="stack" method="post" action="/login">
<label>Name <input id="name" name="name" autocomplete="username" maxlength="64" required></label>
<label><input id="remember" name="remember" type="checkbox" value="on"> Remember me for 30 days</label>
<button id="login">Log in</button>
</form>
{{end}}

{{define "home"}}{{template "top" "Start"}}<h1>Start</h1>
{{template "flash" .Flash}}
{{- if .User}}
<p id="user">Logged in as <b>{{.User}}</b></p>
<p id="visits">Visits in this session: {{.Visits}}</p>
<div class="actions">
<a id="devices" href="/devices">Your devices</a>
</div>
<form method="post" action="/logout"><button id="logout" class="secondary">Log out</button></form>
{{else}}
<p id="user">Not logged in</p>
{{template "loginform"}}
{{end}}
<h2>Server-sent events</h2>
<p><button id="stream" type="button" class="secondary">Stream events</button> (or open <a href="/events">/events</a>)</p>
<ol id="events"></ol>
<script src="/static/app.js"></script>
{{template "bottom"}}{{end}}

{{define "login"}}{{template "top" "Log in"}}<h1>Log in</h1>
{{template "flash" .Flash}}
<p id="user">Not logged in</p>
{{template "loginform"}}
{{template "bottom"}}{{end}}

{{define "devices"}}{{template "top" "Your devices"}}<h1>Your devices</h1>
{{template "flash" .Flash}}
<p>Where <b>{{.User}}</b> is logged in, most recently used first. Sign out any device you do not recognise.</p>
<table id="sessions">
<tr><th>Browser</th><th>Address</th><th>Last used</th><th>Expires</th><th></th></tr>
{{- range .Sessions}}
<tr class="session">
<td class="agent">{{or .Device.UserAgent "(unknown browser)"}}{{if .Current}} <b class="current">(this device)</b>{{end}}</td>
<td class="addr">{{.Device.Addr}}</td>
<td>{{when .LastAccess}}</td>
<td>{{if .Expires.IsZero}}never{{else}}{{when .Expires}}{{end}}</td>
<td>{{if not .Current}}<form class="inline" method="post" action="/devices/{{.ID}}/signout"><button id="signout-{{.ID}}" class="secondary">Sign out</button></form>{{end}}</td>
</tr>
{{- end}}
</table>
<div class="actions">
<form method="post" action="/devices/signout-others"><button id="signout-others" class="secondary">Sign out all other devices</button></form>
<form method="post" action="/logout-everywhere"><button id="logout-everywhere" class="danger">Log out everywhere, this device too</button></form>
</div>
<p><a id="home" href="/">Back to the start page</a></p>
{{template "bottom"}}{{end}}
`))

// render executes the named template with data as the page.
func (a *app) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := templates.ExecuteTemplate(w, name, data); err != nil {
		a.log.ErrorContext(r.Context(), "render page", "page", name, "err", err)
	}
}

// popFlash returns the message the previous request left for this page,
// or "", and removes it from the session, so it is shown once. Popping
// when there is no message writes nothing, so pages can always call it;
// popping the last value of a session deletes the session.
func popFlash(s *pgsession.Session) (string, error) {
	var msg string
	_, err := s.Pop(flashKey, &msg)
	return msg, err
}

// user returns the name of the logged-in user, or "" for an anonymous
// visitor.
func user(s *pgsession.Session) (string, error) {
	var name string
	_, err := s.Get(userKey, &name)
	return name, err
}

// home shows who is logged in and counts their visits. It writes to the
// session only for a logged-in user, or to remove a message it shows: an
// anonymous visitor has no session, and giving every visitor one would
// store a row per visitor (a crawler, a flood of requests) until the
// janitor removes it.
func (a *app) home(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var data struct {
		Flash  string
		User   string
		Visits int
	}
	var err1, err2 error
	data.Flash, err1 = popFlash(s)
	data.User, err2 = user(s)
	if err := errors.Join(err1, err2); err != nil {
		a.fail(w, r, err)
		return
	}
	if data.User != "" {
		if _, err := s.Get(visitsKey, &data.Visits); err != nil {
			a.fail(w, r, err)
			return
		}
		data.Visits++
		if err := s.Set(visitsKey, data.Visits); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	a.render(w, r, "home", data)
}

// loginPage shows the login form, the one the start page shows to an
// anonymous visitor. A logged-in user is sent to the start page.
func (a *app) loginPage(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	name, err := user(s)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if name != "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	var data struct{ Flash string }
	if data.Flash, err = popFlash(s); err != nil {
		a.fail(w, r, err)
		return
	}
	a.render(w, r, "login", data)
}

// login starts a new session for the user: it drops whatever the session
// held before (another user's data, a message), gives it the lifetime the
// "Remember me" box asks for, and rotates the session key, so a key
// planted before the login (session fixation) is worth nothing after it.
// This is where a session is created: the first write to the store for a
// visitor. A real application checks a password first; this example
// trusts the name.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" || len(name) > 64 {
		http.Error(w, "a name of 1 to 64 characters is required", http.StatusBadRequest)
		return
	}
	// Unticked: Config's timeouts and a browser-session cookie. The zero
	// Lifetime is not the same as not calling SetLifetime: it replaces a
	// "Remember me" lifetime the session may have had before.
	var lifetime pgsession.Lifetime
	if r.PostFormValue("remember") == "on" {
		lifetime = rememberMe
	}
	s := pgsession.FromContext(r.Context())
	if err := errors.Join(
		s.Clear(),
		s.Set(userKey, name),
		s.Set(flashKey, "Welcome, "+name),
		pgsession.SetLifetime(r.Context(), lifetime),
		pgsession.RotateKey(r.Context()),
	); err != nil {
		a.fail(w, r, err)
		return
	}
	// See other: the browser follows with a GET, so a reload does not post
	// the form again.
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the user's session. An anonymous visitor is sent to the
// start page without any change, so logging out twice stores nothing.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	if !s.Has(userKey) {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	a.signOut(w, r, "You are signed out.")
}

// logoutEverywhere ends every session of the logged-in user: the others
// first, then this one.
func (a *app) logoutEverywhere(w http.ResponseWriter, r *http.Request) {
	name, ok := a.requireUser(w, r)
	if !ok {
		return
	}
	n, err := a.m.DeleteOtherSessions(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "logged out everywhere", "user", name, "other_sessions", n)
	a.signOut(w, r, "You are signed out here and on "+otherDevices(n)+".")
}

// signOut ends the request's session and redirects to the start page,
// which shows msg once.
//
// The session is cleared, which drops the user, and its key is rotated,
// so the old key is dead even if a copy of the cookie survives somewhere.
// The message is then the only value of the session: a small anonymous
// session with a short lifetime and a browser-session cookie (flashOnly
// replaces a "Remember me" lifetime). The start page pops the message,
// which leaves the session empty, and an empty session is deleted with its
// cookie. So the logout stores one short-lived row without a user, for
// one redirect; an application that wants none at all can redirect to a
// fixed "signed out" page instead, at the price of showing it on every
// visit to that address.
func (a *app) signOut(w http.ResponseWriter, r *http.Request, msg string) {
	s := pgsession.FromContext(r.Context())
	if err := errors.Join(
		s.Clear(),
		s.Set(flashKey, msg),
		pgsession.SetLifetime(r.Context(), flashOnly),
		pgsession.RotateKey(r.Context()),
	); err != nil {
		a.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// devices lists the sessions of the logged-in user, marking this one, with
// a button to sign out each of the others. An anonymous visitor is sent to
// the start page.
func (a *app) devices(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var data struct {
		Flash    string
		User     string
		Sessions []pgsession.SessionInfo
	}
	var err error
	if data.User, err = user(s); err != nil {
		a.fail(w, r, err)
		return
	}
	if data.User == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if data.Flash, err = popFlash(s); err != nil {
		a.fail(w, r, err)
		return
	}
	if data.Sessions, err = a.m.ListByPrincipal(r.Context(), data.User); err != nil {
		a.fail(w, r, err)
		return
	}
	a.render(w, r, "devices", data)
}

// signOutDevice deletes the session named in the path, if it is one of
// the logged-in user's: DeleteSession checks the owner, so an ID of
// another user's session, guessed or seen, does nothing. The message is
// the same whether the session did not exist or belonged to someone else,
// so it tells nothing about other users' sessions.
func (a *app) signOutDevice(w http.ResponseWriter, r *http.Request) {
	name, ok := a.requireUser(w, r)
	if !ok {
		return
	}
	id, err := pgsession.ParseSessionID(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a session ID", http.StatusBadRequest)
		return
	}
	deleted, err := a.m.DeleteSession(r.Context(), name, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	msg := "That device was already signed out."
	if deleted {
		msg = "Signed out 1 device."
	}
	a.flashAndShowDevices(w, r, msg)
}

// signOutOthers deletes every session of the logged-in user but this one.
func (a *app) signOutOthers(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.requireUser(w, r); !ok {
		return
	}
	n, err := a.m.DeleteOtherSessions(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.flashAndShowDevices(w, r, "Signed out "+otherDevices(n)+".")
}

// flashAndShowDevices stores msg for the devices page and redirects there.
func (a *app) flashAndShowDevices(w http.ResponseWriter, r *http.Request, msg string) {
	if err := pgsession.FromContext(r.Context()).Set(flashKey, msg); err != nil {
		a.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/devices", http.StatusSeeOther)
}

// requireUser returns the logged-in user's name, or answers 401 and
// reports false.
func (a *app) requireUser(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, err := user(pgsession.FromContext(r.Context()))
	switch {
	case err != nil:
		a.fail(w, r, err)
		return "", false
	case name == "":
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return "", false
	}
	return name, true
}

// otherDevices returns "1 other device" or "n other devices".
func otherDevices(n int) string {
	if n == 1 {
		return "1 other device"
	}
	return strconv.Itoa(n) + " other devices"
}

// events streams a few server-sent events that read the session. The
// session is saved at the first Flush, before any byte of the body, so the
// session cookie leaves with the response headers even though the response
// is never complete until the stream ends. Changes after that first Flush
// would fail with pgsession.ErrAlreadySaved, so the handler makes its one
// change (counting the stream, for a logged-in user only) before it starts
// writing.
func (a *app) events(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var user string
	var streams int
	_, err1 := s.Get(userKey, &user)
	_, err2 := s.Get(streamsKey, &streams)
	if err := errors.Join(err1, err2); err != nil {
		a.fail(w, r, err)
		return
	}
	if user != "" {
		if err := s.Set(streamsKey, streams+1); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	for i := 1; i <= eventCount; i++ {
		if i > 1 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(eventInterval):
			}
		}
		// Read the session while the response streams: reads work after
		// the save, they see the request's own view.
		var ev struct {
			N       int    `json:"n"`
			User    string `json:"user"`
			Visits  int    `json:"visits"`
			Streams int    `json:"streams"`
		}
		ev.N = i
		_, err1 := s.Get(userKey, &ev.User)
		_, err2 := s.Get(visitsKey, &ev.Visits)
		_, err3 := s.Get(streamsKey, &ev.Streams)
		if err := errors.Join(err1, err2, err3); err != nil {
			a.log.ErrorContext(r.Context(), "read session during stream", "err", err)
			return
		}
		msg, _ := json.Marshal(ev) // cannot fail: strings and ints
		if _, err := fmt.Fprintf(w, "data: %s\n\n", msg); err != nil {
			return // client gone
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	// A named event tells the page's EventSource to close rather than
	// reconnect when the stream ends.
	fmt.Fprint(w, "event: end\ndata: {}\n\n")
}

// healthz answers for load balancers. It freezes the session, so a probe
// that carries a session cookie never writes, extends or sets a cookie.
func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FreezeSession(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// vars serves this Manager's Stats as {"pgsession": {...}}, and nothing
// else. It is not expvar.Handler, which also publishes the process's
// command line (where a -database-url may hold a password), its memory
// statistics and whatever any imported package published. Importing
// expvar at all would also add that handler to http.DefaultServeMux. Even
// so, serve /debug/vars only where your monitoring can reach it, not to the
// internet.
func (a *app) vars(w http.ResponseWriter, r *http.Request) {
	body, err := json.Marshal(map[string]pgsession.Stats{statsVar: a.m.Stats()})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}

// fail logs err and answers 500. Session errors are bugs or an unavailable
// store; the client learns nothing from their text.
func (a *app) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "err", err)
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}
