package pgsession_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"strings"

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

func get(c *http.Client, url string) string {
	resp, err := c.Get(url)
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
