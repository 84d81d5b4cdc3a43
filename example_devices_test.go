package pgsession_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pgsession/pgsession"
)

// Give a session its own lifetime at login: "remember me" keeps it for 30
// days of inactivity and across browser restarts; without it, the cookie
// ends with the browser.
func ExampleSetLifetime() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	login := func(w http.ResponseWriter, r *http.Request) {
		// Check the credentials first, then:
		_ = pgsession.FromContext(r.Context()).Set("user", "ada")
		err := pgsession.SetLifetime(r.Context(), pgsession.Lifetime{
			IdleTimeout: 30 * 24 * time.Hour, // AbsoluteTimeout zero: Config's
			Persistent:  r.FormValue("remember") == "on",
		})
		if err == nil {
			err = pgsession.RotateKey(r.Context())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}
	h := m.Middleware(http.HandlerFunc(login))
	for _, form := range []string{"remember=on", ""} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/login?"+form, nil))
		ck := rec.Result().Cookies()[0]
		fmt.Printf("%q: Max-Age %d\n", form, ck.MaxAge)
	}
	// Output:
	// "remember=on": Max-Age 2592000
	// "": Max-Age 0
}

// A "your devices" page: list the user's sessions, sign one out, or sign
// out all the others.
func ExampleManager_ListByPrincipal() {
	m, _ := pgsession.New(pgsession.Config{
		Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey},
		PrincipalKey: "user",
		Device:       pgsession.DeviceFromRequest(nil), // the User-Agent only
	})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FromContext(r.Context()).Set("user", "ada") // rotates the key by itself
	})
	mux.HandleFunc("GET /devices", func(w http.ResponseWriter, r *http.Request) {
		list, err := m.ListByPrincipal(r.Context(), "ada")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, d := range list {
			fmt.Fprintf(w, "%s current=%v\n", d.Device.UserAgent, d.Current)
		}
	})
	mux.HandleFunc("POST /devices/{id}/signout", func(w http.ResponseWriter, r *http.Request) {
		id, err := pgsession.ParseSessionID(r.PathValue("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := m.DeleteSession(r.Context(), "ada", id); err != nil { // only ada's own sessions
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("POST /devices/signout-others", func(w http.ResponseWriter, r *http.Request) {
		n, err := m.DeleteOtherSessions(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "signed out %d\n", n)
	})
	srv := httptest.NewTLSServer(m.Middleware(mux))
	defer srv.Close()

	do := func(c *http.Client, method, path, agent string) string {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("User-Agent", agent)
		return send(c, req)
	}
	phone, laptop := browser(srv), browser(srv)
	do(phone, "POST", "/login", "phone")
	do(laptop, "POST", "/login", "laptop")
	fmt.Println(do(laptop, "GET", "/devices", "laptop"))
	fmt.Println(do(laptop, "POST", "/devices/signout-others", "laptop"))
	fmt.Println(do(laptop, "GET", "/devices", "laptop"))
	// Output:
	// laptop current=true
	// phone current=false
	// signed out 1
	// laptop current=true
}

// exampleLogin stores a session of user through Manager.Load and Save (as a
// job or a login outside HTTP would) and returns a context carrying it, as
// the next request of that client would see it.
func exampleLogin(m *pgsession.Manager, user string) context.Context {
	ctx, _ := m.Load(context.Background(), "")
	_ = pgsession.FromContext(ctx).Set("user", user)
	token, _ := m.Save(ctx)
	ctx, _ = m.Load(context.Background(), token)
	return ctx
}

// Sign out every other device of the request's user, keeping the request's
// own session ("sign out all other devices").
func ExampleManager_DeleteOtherSessions() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}, PrincipalKey: "user"})
	exampleLogin(m, "ada") // the phone
	exampleLogin(m, "ada") // the tablet
	laptop := exampleLogin(m, "ada")
	n, err := m.DeleteOtherSessions(laptop)
	fmt.Println("signed out", n, err)
	list, _ := m.ListByPrincipal(laptop, "ada")
	fmt.Println(len(list), "left, current:", list[0].Current)
	// Output:
	// signed out 2 <nil>
	// 1 left, current: true
}

// Sign out one device, by the ID a device list showed. Only the owner's ID
// works: another user's is ignored.
func ExampleManager_DeleteSession() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}, PrincipalKey: "user"})
	exampleLogin(m, "ada")
	list, _ := m.ListByPrincipal(context.Background(), "ada")
	id := list[0].ID.String() // as a form would post it back

	parsed, err := pgsession.ParseSessionID(id)
	if err != nil {
		fmt.Println(err)
		return
	}
	ok, _ := m.DeleteSession(context.Background(), "mallory", parsed)
	fmt.Println("mallory:", ok)
	ok, _ = m.DeleteSession(context.Background(), "ada", parsed)
	fmt.Println("ada:", ok)
	// Output:
	// mallory: false
	// ada: true
}

// List what a session holds, and test for a key without decoding it.
func ExampleSession_Keys() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	ctx, _ := m.Load(context.Background(), "")
	s := pgsession.FromContext(ctx)
	_ = s.Set("user", "ada")
	_ = s.Set("cart", []string{"tea"})
	fmt.Println(s.Keys(), s.Has("cart"), s.Has("theme"))
	// Output: [cart user] true false
}
