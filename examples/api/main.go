// Command api is a JSON API on pgsession for clients that cannot keep
// cookies (mobile apps, webviews, scripts): the session key travels as
// "Authorization: Bearer <token>".
//
//	go run ./examples/api                       # memory backend, on localhost:8081
//	curl -s -X POST localhost:8081/login -d '{"name":"ada"}'      # → {"token":"..."}
//	curl -s localhost:8081/me -H "Authorization: Bearer $TOKEN"   # → {"user":"ada","calls":1}
//	curl -s -X POST localhost:8081/logout -H "Authorization: Bearer $TOKEN"
//
// With -database-url (or $DATABASE_URL) it uses PostgreSQL. The hash key
// comes from $SESSION_HASH_KEY (hex, 32 bytes or more) or is random.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/pgsession/pgsession"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	addr := flag.String("addr", "localhost:8081", "listen address")
	dbURL := flag.String("database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL; empty for the memory backend")
	flag.Parse()
	key, err := hex.DecodeString(os.Getenv("SESSION_HASH_KEY"))
	if err != nil || len(key) < pgsession.MinHashKeyLength {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		log.Warn("no valid $SESSION_HASH_KEY: using a random key, so tokens will not survive a restart")
	}
	var backend pgsession.Backend = pgsession.NewMemoryBackend()
	if *dbURL != "" {
		db, err := sqlx.Open("postgres", *dbURL)
		if err != nil {
			log.Error("open", "err", err)
			os.Exit(1)
		}
		pg := pgsession.NewPostgresBackend(db)
		if err := pg.Migrate(context.Background()); err != nil {
			log.Error("migrate", "err", err)
			os.Exit(1)
		}
		backend = pg
	}
	m, err := newManager(backend, key, log)
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(1)
	}
	log.Info("listening", "url", "http://"+*addr)
	srv := &http.Server{Addr: *addr, Handler: newAPI(m), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// newManager accepts bearer tokens and names the user as the principal, so
// a login rotates the key even without RotateKey.
func newManager(b pgsession.Backend, key []byte, log *slog.Logger) (*pgsession.Manager, error) {
	return pgsession.New(pgsession.Config{
		Backend:      b,
		HashKeys:     [][]byte{key},
		Carrier:      pgsession.CookieOrBearer,
		PrincipalKey: "user",
		Logger:       log,
	})
}

// newAPI returns the API's routes inside the session middleware.
func newAPI(m *pgsession.Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", login)
	mux.HandleFunc("GET /me", me)
	mux.HandleFunc("POST /logout", logout)
	mux.HandleFunc("POST /logout-everywhere", func(w http.ResponseWriter, r *http.Request) {
		var user string
		if ok, _ := pgsession.FromContext(r.Context()).Get("user", &user); !ok {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "not logged in"})
			return
		}
		n, err := m.DeleteByPrincipal(r.Context(), user)
		if err != nil {
			reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		reply(w, http.StatusOK, map[string]int{"revoked": n})
	})
	return m.Middleware(mux)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// login stores the user, rotates, and hands the client its token in the
// body. (A real API checks a password first.)
func login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req); err != nil || req.Name == "" {
		reply(w, http.StatusBadRequest, map[string]string{"error": `want {"name": "..."}`})
		return
	}
	s := pgsession.FromContext(r.Context())
	err := errors.Join(s.Set("user", req.Name), s.Set("calls", 0), pgsession.RotateKey(r.Context()))
	if err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	token, err := pgsession.Token(r.Context()) // after Set and RotateKey: the new key
	if err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, map[string]string{"token": token})
}

// me answers who the token belongs to, counting calls in the session.
func me(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var user string
	var calls int
	if ok, _ := s.Get("user", &user); !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not logged in"})
		return
	}
	if _, err := s.Get("calls", &calls); err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	calls++
	if err := s.Set("calls", calls); err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, map[string]any{"user": user, "calls": calls})
}

// logout deletes the session: the token is dead from now on.
func logout(w http.ResponseWriter, r *http.Request) {
	if err := pgsession.FromContext(r.Context()).Clear(); err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, map[string]string{"status": "logged out"})
}
