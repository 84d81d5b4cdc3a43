package pgsession_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pgsession/pgsession"
)

// exampleKey is a fixed hash key for the examples. Real applications load a
// random 32-byte secret from their configuration.
var exampleKey = []byte("an-example-secret-of-32-bytes!!!")

// browser returns a client with a cookie jar for srv (a TLS server, so the
// Secure session cookie is kept and sent back).
func browser(srv *httptest.Server) *http.Client {
	c := *srv.Client() // a copy: srv.Client returns one shared client
	c.Jar, _ = cookiejar.New(nil)
	return &c
}

// get returns the trimmed body of a GET of url through c (or the error).
func get(c *http.Client, url string) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	return send(c, req)
}

// send returns the trimmed body of the response to req through c (or the
// error).
func send(c *http.Client, req *http.Request) string {
	resp, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// Wrap a ServeMux: every handler finds the visitor's session in its context.
func Example() {
	m, err := pgsession.New(pgsession.Config{
		Backend:  pgsession.NewMemoryBackend(), // NewPostgresBackend(db) in production
		HashKeys: [][]byte{exampleKey},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var visits int
		if _, err := s.Get("visits", &visits); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		visits++
		if err := s.Set("visits", visits); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "visit %d\n", visits)
	})
	srv := httptest.NewTLSServer(m.Middleware(mux))
	defer srv.Close()

	c := browser(srv)
	for range 3 {
		fmt.Println(get(c, srv.URL))
	}
	// Output:
	// visit 1
	// visit 2
	// visit 3
}

// Rotate the key on login and on logout, so that a key seen before either
// event is worthless afterwards.
func ExampleRotateKey() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		// Check the credentials first, then:
		s := pgsession.FromContext(r.Context())
		if err := s.Set("user", r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := pgsession.RotateKey(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "logged in")
	})
	mux.HandleFunc("GET /logout", func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FromContext(r.Context()).Clear() // an empty session is deleted
		_ = pgsession.RotateKey(r.Context())
		fmt.Fprintln(w, "logged out")
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		var user string
		if ok, _ := pgsession.FromContext(r.Context()).Get("user", &user); !ok {
			user = "nobody"
		}
		fmt.Fprintln(w, user)
	})
	srv := httptest.NewTLSServer(m.Middleware(mux))
	defer srv.Close()

	c := browser(srv)
	fmt.Println(get(c, srv.URL+"/login?user=ada"))
	fmt.Println(get(c, srv.URL+"/me"))
	fmt.Println(get(c, srv.URL+"/logout"))
	fmt.Println(get(c, srv.URL+"/me"))
	// Output:
	// logged in
	// ada
	// logged out
	// nobody
}

// Freeze the session on a health check: it neither writes to the database
// nor sends a cookie, whatever the handler does.
func ExampleFreezeSession() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	health := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FreezeSession(r.Context())
		_ = pgsession.FromContext(r.Context()).Set("probe", true) // not saved
		fmt.Fprintln(w, "ok")
	})
	rec := httptest.NewRecorder()
	m.Middleware(health).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	fmt.Println(rec.Body.String() == "ok\n", rec.Header().Get("Set-Cookie") == "")
	// Output: true true
}

// Read a typed value: Get decodes the stored JSON into any pointer.
func ExampleSession_Get() {
	type Cart struct {
		Items []string `json:"items"`
		Total int      `json:"total"`
	}
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /add", func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var cart Cart
		if _, err := s.Get("cart", &cart); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cart.Items = append(cart.Items, r.URL.Query().Get("item"))
		cart.Total += 5
		_ = s.Set("cart", cart)
		fmt.Fprintf(w, "%v %d\n", cart.Items, cart.Total)
	})
	srv := httptest.NewTLSServer(m.Middleware(mux))
	defer srv.Close()
	c := browser(srv)
	get(c, srv.URL+"/add?item=tea")
	fmt.Println(get(c, srv.URL+"/add?item=milk"))
	// Output: [tea milk] 10
}

// Store sessions in PostgreSQL. Migrate creates the table on first start and
// checks it afterwards.
func ExampleNewPostgresBackend() {
	db, err := sqlx.Open("postgres", os.Getenv("DATABASE_URL")) // lib/pq, or "pgx" with pgx's stdlib
	if err != nil {
		log.Fatal(err)
	}
	backend := pgsession.NewPostgresBackend(db, pgsession.WithTable("sessions"))
	if err := backend.Migrate(context.Background()); err != nil {
		log.Fatal(err)
	}
	m, err := pgsession.New(pgsession.Config{Backend: backend, HashKeys: [][]byte{exampleKey}})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe(":8080", m.Middleware(http.NotFoundHandler())))
}

// Choose the statement mode by deployment: the driver's prepared statements
// on a direct connection, SQL PREPARE/EXECUTE behind a transaction pooler
// such as PgBouncer.
func ExampleWithDriverPreparedStatements() {
	db, err := sqlx.Open("postgres", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	mode := pgsession.WithDriverPreparedStatements()
	if os.Getenv("DATABASE_BEHIND_PGBOUNCER") != "" {
		mode = pgsession.WithPreparedStatements()
	}
	backend := pgsession.NewPostgresBackend(db, mode) // backend.Close closes its prepared statements
	if err := backend.Migrate(context.Background()); err != nil {
		log.Fatal(err)
	}
	m, err := pgsession.New(pgsession.Config{Backend: backend, HashKeys: [][]byte{exampleKey}})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe(":8080", m.Middleware(http.NotFoundHandler())))
}

// Show a flash message once, on the page a form redirects to.
func ExampleSession_Pop() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /save", func(w http.ResponseWriter, r *http.Request) {
		// Save the form, then:
		_ = pgsession.FromContext(r.Context()).Set("flash", []string{"Saved.", "A copy was sent."})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		var flash []string
		if ok, _ := pgsession.FromContext(r.Context()).Pop("flash", &flash); !ok {
			flash = []string{"(no message)"}
		}
		fmt.Fprintln(w, strings.Join(flash, " "))
	})
	srv := httptest.NewTLSServer(m.Middleware(mux))
	defer srv.Close()

	c := browser(srv)
	fmt.Println(get(c, srv.URL+"/save")) // follows the redirect
	fmt.Println(get(c, srv.URL+"/"))
	// Output:
	// Saved. A copy was sent.
	// (no message)
}

// Use a session outside an HTTP handler: a job (or a WebSocket connection,
// a gRPC service) loads it by its token, changes it, and saves it.
func ExampleManager_Load() {
	m, _ := pgsession.New(pgsession.Config{Backend: pgsession.NewMemoryBackend(), HashKeys: [][]byte{exampleKey}})
	ctx := context.Background()

	// A login over some other protocol: "" starts a new session.
	login, _ := m.Load(ctx, "")
	_ = pgsession.FromContext(login).Set("user", "ada")
	token, _ := m.Save(login) // hand this to the client
	fmt.Println("logged in:", token != "")

	// Later, a request arrives with the token.
	job, err := m.Load(ctx, token)
	if err != nil {
		log.Fatal(err) // the database failed; a bad or expired token is just an empty session
	}
	var user string
	_, _ = pgsession.FromContext(job).Get("user", &user)
	_ = pgsession.FromContext(job).Set("role", "admin")
	_ = pgsession.RotateKey(job) // a privilege change
	newToken, _ := m.Save(job)
	fmt.Println(user, "has a new token:", newToken != token)

	// The old token is dead.
	stale, _ := m.Load(ctx, token)
	fmt.Println("old token's session holds", pgsession.FromContext(stale).Len(), "keys")
	// Output:
	// logged in: true
	// ada has a new token: true
	// old token's session holds 0 keys
}

// Serve two sessions in one app: preferences kept for a year beside a login
// that ends after an idle hour, each in its own cookie.
func ExampleManager_FromContext() {
	backend := pgsession.NewMemoryBackend()
	prefs, _ := pgsession.New(pgsession.Config{
		Backend: backend, HashKeys: [][]byte{exampleKey},
		Cookie:          pgsession.CookieConfig{Name: "__Host-prefs"},
		IdleTimeout:     365 * 24 * time.Hour,
		AbsoluteTimeout: -1,
	})
	auth, _ := pgsession.New(pgsession.Config{Backend: backend, HashKeys: [][]byte{exampleKey}, IdleTimeout: time.Hour})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /theme", func(w http.ResponseWriter, r *http.Request) {
		_ = prefs.FromContext(r.Context()).Set("theme", r.URL.Query().Get("t"))
	})
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		_ = auth.FromContext(r.Context()).Set("user", "ada")
		_ = pgsession.RotateKey(r.Context()) // rotates both sessions
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		var theme, user string
		_, _ = prefs.FromContext(r.Context()).Get("theme", &theme)
		_, _ = auth.FromContext(r.Context()).Get("user", &user)
		fmt.Fprintf(w, "theme=%q user=%q\n", theme, user)
	})
	srv := httptest.NewTLSServer(prefs.Middleware(auth.Middleware(mux)))
	defer srv.Close()

	c := browser(srv)
	get(c, srv.URL+"/theme?t=dark")
	get(c, srv.URL+"/login")
	fmt.Println(get(c, srv.URL+"/"))
	u, _ := url.Parse(srv.URL)
	fmt.Println(len(c.Jar.Cookies(u)), "cookies")
	// Output:
	// theme="dark" user="ada"
	// 2 cookies
}
