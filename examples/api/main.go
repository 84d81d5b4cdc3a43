// Command api is a JSON API on pgsession for clients that cannot keep
// cookies (mobile apps, webviews, scripts): the session key travels as
// "Authorization: Bearer <token>", and only there.
//
//	go -C examples run ./api                    # memory backend, on localhost:8081
//	curl -s -X POST localhost:8081/login -H 'Content-Type: application/json' -d '{"name":"ada"}'  # → {"token":"..."}
//	curl -s localhost:8081/me -H "Authorization: Bearer $TOKEN"                                  # → {"user":"ada","calls":1}
//	curl -s -X POST localhost:8081/logout -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN"
//
// The API never reads or sets a cookie (pgsession.BearerOnly). A cookie is
// an ambient credential: a browser sends it with any request another site
// makes it send, so an API that accepted cookies could be driven from a
// cross-site form. Tokens are sent only by code that holds them. On top of
// that, the API refuses cross-origin browser requests
// (http.CrossOriginProtection) and POST bodies that are not
// "Content-Type: application/json" (415 Unsupported Media Type), which no
// HTML form can send.
//
// $DATABASE_URL selects PostgreSQL (lib/pq); without it sessions live in
// memory. The hash key comes from $SESSION_HASH_KEY (hex, 32 bytes or
// more) or is random. Both are read from the environment only, never from
// flags: a command line is visible to every user of the machine.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// cleanupInterval is how often expired sessions are swept from the store.
const cleanupInterval = 15 * time.Minute

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	addr := flag.String("addr", "localhost:8081", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	key, err := hex.DecodeString(os.Getenv("SESSION_HASH_KEY"))
	if err != nil || len(key) < pgsession.MinHashKeyLength {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		log.Warn("no valid $SESSION_HASH_KEY: using a random key, so tokens will not survive a restart")
	}
	var store backend.Backend = pgsession.NewMemoryBackend()
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		db, err := sqlx.Open("postgres", dsn)
		if err != nil {
			// The driver's error may quote the URL, password included.
			log.Error("$DATABASE_URL is not a valid PostgreSQL URL or connection string")
			os.Exit(1)
		}
		pg := pgsession.NewPostgresBackend(db)
		if err := pg.Migrate(ctx); err != nil {
			log.Error("migrate", "err", err)
			os.Exit(1)
		}
		store = pg
	}
	m, err := newManager(store, key, log)
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(1)
	}
	go func() { _ = m.RunCleanup(ctx, cleanupInterval) }() // the janitor

	srv := &http.Server{Addr: *addr, Handler: newAPI(m, log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "url", "http://"+*addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// newManager takes the session key from bearer tokens only and names the
// user as the principal, so a login rotates the key even without
// RotateKey.
func newManager(b backend.Backend, key []byte, log *slog.Logger) (*pgsession.Manager, error) {
	return pgsession.New(pgsession.Config{
		Backend:      b,
		HashKeys:     [][]byte{key},
		Carrier:      pgsession.BearerOnly,
		PrincipalKey: "user",
		Logger:       log,
	})
}

// api is the API's handlers around one Manager.
type api struct {
	m   *pgsession.Manager
	log *slog.Logger
}

// newAPI returns the API's routes inside the session middleware, behind
// cross-origin protection and a JSON-only rule for request bodies: a
// request refused by either never reaches the session store.
func newAPI(m *pgsession.Manager, log *slog.Logger) http.Handler {
	a := &api{m: m, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("GET /me", a.me)
	mux.HandleFunc("POST /logout", a.logout)
	mux.HandleFunc("POST /logout-everywhere", a.logoutEverywhere)
	return http.NewCrossOriginProtection().Handler(requireJSON(m.Middleware(mux)))
}

// requireJSON answers 415 Unsupported Media Type to a request that has a
// body, or declares one, other than application/json. HTML forms can only
// send application/x-www-form-urlencoded, multipart/form-data and
// text/plain, so no form on another site can post to the API, whatever
// the browser.
func requireJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if ct == "" && r.ContentLength == 0 {
			next.ServeHTTP(w, r) // no body: a GET, or a POST /logout
			return
		}
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			reply(w, http.StatusUnsupportedMediaType, map[string]string{"error": "want Content-Type: application/json"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// reply writes v as the JSON response with the given status.
func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// fail logs err and answers 500. The client learns nothing from the
// error's text, which may describe the database.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "err", err)
	reply(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
}

// login stores the user, rotates, and hands the client its token in the
// body. (A real API checks a password first.)
func (a *api) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req)
	req.Name = strings.TrimSpace(req.Name)
	if err != nil || req.Name == "" || len(req.Name) > 64 {
		reply(w, http.StatusBadRequest, map[string]string{"error": `want {"name": "..."}, 1 to 64 characters`})
		return
	}
	s := pgsession.FromContext(r.Context())
	if err := errors.Join(s.Set("user", req.Name), s.Set("calls", 0), pgsession.RotateKey(r.Context())); err != nil {
		a.fail(w, r, err)
		return
	}
	token, err := pgsession.Token(r.Context()) // after Set and RotateKey: the new key
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, map[string]string{"token": token})
}

// me answers who the token belongs to, counting calls in the session.
func (a *api) me(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var user string
	var calls int
	if ok, _ := s.Get("user", &user); !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not logged in"})
		return
	}
	if _, err := s.Get("calls", &calls); err != nil {
		a.fail(w, r, err)
		return
	}
	calls++
	if err := s.Set("calls", calls); err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, map[string]any{"user": user, "calls": calls})
}

// logout deletes the session: the token is dead from now on.
func (a *api) logout(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FromContext(r.Context()).Clear(); err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, map[string]string{"status": "logged out"})
}

// logoutEverywhere deletes every session of the token's user, this one
// included.
func (a *api) logoutEverywhere(w http.ResponseWriter, r *http.Request) {
	var user string
	if ok, _ := pgsession.FromContext(r.Context()).Get("user", &user); !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not logged in"})
		return
	}
	n, err := a.m.DeleteByPrincipal(r.Context(), user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, map[string]int{"revoked": n})
}
