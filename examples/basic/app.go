package main

import (
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsession/pgsession"
)

// userKey is the session key naming who is logged in; it is also the
// Manager's PrincipalKey, so "log out all my devices" works.
const userKey = "user"

// app is the example's handlers around one Manager.
type app struct {
	m   *pgsession.Manager
	log *slog.Logger
}

// newApp returns the example's whole handler: cross-origin protection for
// state-changing requests (before any session is loaded), then the session
// middleware, then the routes.
func newApp(m *pgsession.Manager, log *slog.Logger) http.Handler {
	a := &app{m: m, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.home)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /logout", a.logout)
	mux.HandleFunc("POST /logout-everywhere", a.logoutEverywhere)
	mux.HandleFunc("GET /events", a.events)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /debug/vars", expvar.Handler())
	return http.NewCrossOriginProtection().Handler(m.Middleware(mux))
}

// expvar's registry is process-wide and refuses a name twice, so the
// "pgsession" variable is published once and reports on the Manager last
// given to publishStats.
var (
	statsManager atomic.Pointer[pgsession.Manager]
	publishOnce  sync.Once
)

// publishStats makes /debug/vars report m's counters under "pgsession".
func publishStats(m *pgsession.Manager) {
	statsManager.Store(m)
	publishOnce.Do(func() {
		expvar.Publish("pgsession", expvar.Func(func() any { return statsManager.Load().Stats() }))
	})
}

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>pgsession example</title></head>
<body>
<h1>pgsession example</h1>
<p id="visits">Visits in this session: {{.Visits}}</p>
{{if .User}}
<p id="user">Logged in as <b>{{.User}}</b></p>
<form method="post" action="/logout"><button id="logout">Log out</button></form>
<h2>Your sessions</h2>
<ul>{{range .Sessions}}<li>created {{.Created.Format "15:04:05"}}, last seen {{.LastAccess.Format "15:04:05"}}, id {{printf "%.12s" .ID.String}}…</li>{{end}}</ul>
<form method="post" action="/logout-everywhere"><button id="logout-everywhere">Log out all my devices</button></form>
{{else}}
<p id="user">Not logged in</p>
<form method="post" action="/login">
<label>Name <input id="name" name="name" autocomplete="username" required></label>
<button id="login">Log in</button>
</form>
{{end}}
<p><a href="/events">Server-sent events</a> · <a href="/debug/vars">Stats</a></p>
</body></html>
`))

// home counts the visit and shows who is logged in.
func (a *app) home(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var data struct {
		Visits   int
		User     string
		Sessions []pgsession.SessionInfo
	}
	if _, err := s.Get("visits", &data.Visits); err != nil {
		a.fail(w, err)
		return
	}
	data.Visits++
	if err := s.Set("visits", data.Visits); err != nil {
		a.fail(w, err)
		return
	}
	if _, err := s.Get(userKey, &data.User); err != nil {
		a.fail(w, err)
		return
	}
	if data.User != "" {
		var err error
		if data.Sessions, err = a.m.ListByPrincipal(r.Context(), data.User); err != nil {
			a.fail(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := homePage.Execute(w, data); err != nil {
		a.log.Error("render", "err", err)
	}
}

// login stores the user and rotates the key. A real application checks a
// password first; this example trusts the name it is given.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" || len(name) > 64 {
		http.Error(w, "a name of 1 to 64 characters is required", http.StatusBadRequest)
		return
	}
	err := errors.Join(pgsession.FromContext(r.Context()).Set(userKey, name), pgsession.RotateKey(r.Context()))
	if err != nil {
		a.fail(w, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout clears the session and rotates: the session is deleted and its
// cookie expired.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	if err := errors.Join(pgsession.FromContext(r.Context()).Clear(), pgsession.RotateKey(r.Context())); err != nil {
		a.fail(w, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
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
		a.fail(w, err)
		return
	}
	a.log.Info("logged out everywhere", "user", user, "sessions", n)
	_ = s.Clear() // and expire this browser's cookie
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// events streams a few server-sent events that read the session. The
// session is saved at the first Flush, so the cookie leaves with the headers.
func (a *app) events(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var user string
	if _, err := s.Get(userKey, &user); err != nil {
		a.fail(w, err)
		return
	}
	if err := s.Set("last_stream", time.Now().UTC().Format(time.RFC3339)); err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	for i := 1; i <= 3; i++ {
		var visits int
		_, _ = s.Get("visits", &visits)
		msg, _ := json.Marshal(map[string]any{"n": i, "user": user, "visits": visits})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", msg); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// healthz answers without touching the session: no write, no cookie.
func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FreezeSession(r.Context()); err != nil {
		a.fail(w, err)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (a *app) fail(w http.ResponseWriter, err error) {
	a.log.Error("request failed", "err", err)
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}
