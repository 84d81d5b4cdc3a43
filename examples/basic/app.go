package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pgsession/pgsession"
)

// The session keys the example uses. userKey is also the Manager's
// PrincipalKey, so "log out all my devices" works and a change of user
// rotates the key even without RotateKey.
const (
	userKey    = "user"
	visitsKey  = "visits"
	streamsKey = "streams"
)

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
// everywhere except the principal. The cookie keeps the Secure attribute
// unless insecureCookie is set (see the package documentation).
func managerConfig(b pgsession.Backend, hashKeys [][]byte, insecureCookie bool, log *slog.Logger) pgsession.Config {
	return pgsession.Config{
		Backend:      b,
		HashKeys:     hashKeys,
		PrincipalKey: userKey,
		Cookie:       pgsession.CookieConfig{Insecure: insecureCookie},
		Logger:       log,
	}
}

// app is the example's handlers around one Manager.
type app struct {
	m   *pgsession.Manager
	log *slog.Logger
}

// newApp returns the example's whole handler for m. The pages run inside
// the session middleware, itself behind cross-origin protection: a
// cross-site POST is refused with 403 before any session is loaded.
// /debug/vars runs outside both, so monitoring never creates or extends a
// session.
//
// Only a login stores a session. Anonymous visitors read nothing from the
// store and write nothing to it, so a crawler or a flood of requests
// cannot fill the sessions table (see "Limits" in the README).
//
// It keeps no global state, so tests can build as many as they like.
func newApp(m *pgsession.Manager, log *slog.Logger) http.Handler {
	a := &app{m: m, log: log}

	pages := http.NewServeMux()
	pages.HandleFunc("GET /{$}", a.home)
	pages.HandleFunc("POST /login", a.login)
	pages.HandleFunc("POST /logout", a.logout)
	pages.HandleFunc("POST /logout-everywhere", a.logoutEverywhere)
	pages.HandleFunc("GET /logged-out", a.loggedOut)
	pages.HandleFunc("GET /events", a.events)
	pages.HandleFunc("GET /healthz", a.healthz)

	root := http.NewServeMux()
	root.HandleFunc("GET /debug/vars", a.vars)
	root.Handle("/", http.NewCrossOriginProtection().Handler(m.Middleware(pages)))
	return root
}

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgsession example</title></head>
<body>
<h1>pgsession example</h1>
{{if .User}}
<p id="user">Logged in as <b>{{.User}}</b></p>
<p id="visits">Visits in this session: {{.Visits}}</p>
<form method="post" action="/logout"><button id="logout">Log out</button></form>
<h2>Your sessions</h2>
<ul id="sessions">{{range .Sessions}}
<li>started {{.Created.Format "15:04:05"}}, last seen {{.LastAccess.Format "15:04:05"}}, id {{printf "%.12s" .ID.String}}…</li>{{end}}
</ul>
<form method="post" action="/logout-everywhere"><button id="logout-everywhere">Log out all my devices</button></form>
{{else}}
<p id="user">Not logged in</p>
<form method="post" action="/login">
<label>Name <input id="name" name="name" autocomplete="username" maxlength="64" required></label>
<button id="login">Log in</button>
</form>
{{end}}
<h2>Server-sent events</h2>
<p><button id="stream" type="button">Stream events</button> (or open <a href="/events">/events</a>)</p>
<ol id="events"></ol>
<p><a href="/debug/vars">Session statistics</a> · <a href="/healthz">Health check</a></p>
<script>
document.getElementById("stream").onclick = () => {
	const list = document.getElementById("events");
	list.replaceChildren();
	const es = new EventSource("/events");
	es.onmessage = (e) => {
		const li = document.createElement("li");
		li.textContent = e.data;
		list.append(li);
	};
	es.addEventListener("end", () => es.close()); // else EventSource reconnects
	es.onerror = () => es.close();
};
</script>
</body></html>
`))

// home shows who is logged in and counts their visits. It writes to the
// session only for a logged-in user: an anonymous visitor has no session,
// and giving every visitor one would store a row per visitor (a crawler, a
// flood of requests) until the janitor removes it.
func (a *app) home(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var data struct {
		Visits   int
		User     string
		Sessions []pgsession.SessionInfo
	}
	if _, err := s.Get(userKey, &data.User); err != nil {
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
		var err error
		if data.Sessions, err = a.m.ListByPrincipal(r.Context(), data.User); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := homePage.Execute(w, data); err != nil {
		a.log.ErrorContext(r.Context(), "render home page", "err", err)
	}
}

// login stores the user and rotates the session key, so a key planted
// before the login (session fixation) is worth nothing after it. This is
// where a session is created: the first write to the store for a visitor.
// A real application checks a password first; this example trusts the name.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" || len(name) > 64 {
		http.Error(w, "a name of 1 to 64 characters is required", http.StatusBadRequest)
		return
	}
	s := pgsession.FromContext(r.Context())
	if err := errors.Join(s.Set(userKey, name), pgsession.RotateKey(r.Context())); err != nil {
		a.fail(w, r, err)
		return
	}
	// See other: the browser follows with a GET, so a reload does not post
	// the form again.
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout clears the session and rotates the key: the stored session is
// deleted and the response expires the cookie.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	if err := errors.Join(s.Clear(), pgsession.RotateKey(r.Context())); err != nil {
		a.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/logged-out", http.StatusSeeOther)
}

// logoutEverywhere deletes every session of the logged-in user, this one
// included.
func (a *app) logoutEverywhere(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var user string
	if ok, err := s.Get(userKey, &user); err != nil || !ok {
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return
	}
	n, err := a.m.DeleteByPrincipal(r.Context(), user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "logged out everywhere", "user", user, "sessions", n)
	if err := s.Clear(); err != nil { // and expire this browser's cookie
		a.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/logged-out", http.StatusSeeOther)
}

// loggedOut confirms a logout. It does not touch the session, so it
// creates none: the browser is left with no session cookie at all.
func (a *app) loggedOut(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Logged out</title></head>
<body><p id="user">You are logged out.</p><p><a id="home" href="/">Back to the start page</a></p></body></html>
`)
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
