// Command basic is a small web app on pgsession: a visit counter, login and
// logout with key rotation, "log out all my devices", server-sent events
// that read the session while the response streams, a health check that
// freezes the session, and the session statistics at /debug/vars.
//
//	go run ./examples/basic                                   # memory backend
//	go run ./examples/basic -database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
// then open http://127.0.0.1:8080.
//
// Flags (each has an environment variable; the flag wins):
//
//	-addr             listen address (default 127.0.0.1:8080)
//	-database-url     PostgreSQL URL, $DATABASE_URL; empty: the memory backend
//	-hash-key         $SESSION_HASH_KEY: comma-separated hash keys
//	-insecure-cookie  drop the cookie's Secure attribute (see below)
//
// With no database URL the app keeps sessions in memory and says so; they
// end with the process. With one, it connects with lib/pq, creates or
// checks the "sessions" table (Migrate) and keeps sessions there.
//
// # Hash keys
//
// Each key is hex or base64 (hex is tried first) and at least 32 bytes,
// for example from "openssl rand -hex 32". A comma-separated list rotates
// the secret: the first key signs new cookies and every key verifies, so
// put a new key first and drop the old one once its cookies have expired.
// Prefer the environment variable to the flag: a command line is visible
// to every user of the machine. With no key at all the app makes a random
// one and warns that sessions will not survive a restart, which is fine
// for a try-out and wrong for anything else.
//
// # Secure cookies over plain HTTP
//
// The session cookie keeps pgsession's default Secure attribute, even
// though the example serves plain HTTP. A browser stores and sends a
// Secure cookie only to a secure origin, but Chromium (since version 89)
// and Firefox (since 75) count http://localhost and the loopback addresses
// (127.0.0.1, [::1]) as secure, so on the default address they keep the
// cookie: the browser test of this example checks that in Chromium over
// http://127.0.0.1. No browser does that for any other host over
// http:// (a LAN address, a container name), and Safari does not do it
// even for localhost (WebKit bug 281149): there the login seems to be
// forgotten at once. For those cases, and only on a network you trust,
// run with -insecure-cookie. Keeping Secure by default means the code
// you copy from here is right for production, where the app sits behind
// HTTPS; the app warns when it listens beyond loopback with Secure on.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/pgsession/pgsession"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, log, os.Args[1:], os.Getenv)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

// cleanupInterval is how often expired sessions are swept from the store.
const cleanupInterval = 15 * time.Minute

// run parses args (reading unset settings through getenv), serves until ctx
// ends, then shuts down gracefully.
func run(ctx context.Context, log *slog.Logger, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("basic", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen `address`")
	// Defaults stay empty, not the environment's values, so -help never
	// prints a password or a hash key.
	dbURL := fs.String("database-url", "", "PostgreSQL `URL` (default $DATABASE_URL); none: the memory backend")
	hashKeyList := fs.String("hash-key", "", "comma-separated hash `keys`, hex or base64, 32 bytes or more each; the first signs, all verify (default $SESSION_HASH_KEY)")
	insecure := fs.Bool("insecure-cookie", false, "drop the cookie's Secure attribute, for plain HTTP to a host other than localhost or loopback (or for Safari)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dbURL == "" {
		*dbURL = getenv("DATABASE_URL")
	}
	if *hashKeyList == "" {
		*hashKeyList = getenv("SESSION_HASH_KEY")
	}

	keys, err := parseHashKeys(*hashKeyList)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = [][]byte{randomKey()}
		log.Warn("no -hash-key or $SESSION_HASH_KEY: signing cookies with a random key, so sessions will not survive a restart; " +
			"set SESSION_HASH_KEY to the output of `openssl rand -hex 32` to keep them")
	}

	var backend pgsession.Backend
	if *dbURL == "" {
		backend = pgsession.NewMemoryBackend()
		log.Info("using the memory backend: sessions live in this process only and end with it; give -database-url or $DATABASE_URL for PostgreSQL")
	} else {
		db, err := openPostgres(ctx, *dbURL)
		if err != nil {
			return err
		}
		defer db.Close()
		pg, err := newPostgresBackend(ctx, db)
		if err != nil {
			return err
		}
		defer pg.Close()
		backend = pg
		log.Info("using PostgreSQL", "database", redactURL(*dbURL), "table", pgsession.DefaultTable)
	}

	m, err := pgsession.New(managerConfig(backend, keys, *insecure, log))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if !*insecure && !isLoopback(ln.Addr()) {
		log.Warn("listening beyond loopback with Secure cookies: over plain HTTP, browsers keep them only for localhost and loopback addresses; " +
			"serve HTTPS, or pass -insecure-cookie on a trusted network")
	}

	cleanupCtx, stopCleanup := context.WithCancel(ctx)
	cleanupDone := make(chan struct{})
	go func() {
		defer close(cleanupDone)
		_ = m.RunCleanup(cleanupCtx, cleanupInterval) // returns when cleanupCtx ends
	}()
	defer func() { stopCleanup(); <-cleanupDone }()

	srv := &http.Server{
		Handler:           newApp(m, log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	shutdownDone := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		shutdownDone <- srv.Shutdown(sctx)
	}()
	log.Info("listening", "url", "http://"+ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	err = <-shutdownDone
	log.Info("stopped")
	return err
}

// openPostgres connects to the database at dsn through lib/pq and checks
// that it answers.
func openPostgres(ctx context.Context, dsn string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redactURL(dsn), err)
	}
	return db, nil
}

// newPostgresBackend returns a PostgreSQL backend on db with its table
// created, or checked if it exists (Migrate is idempotent and safe to run
// from several instances at once).
func newPostgresBackend(ctx context.Context, db *sqlx.DB, opts ...pgsession.PostgresOption) (*pgsession.PostgresBackend, error) {
	b := pgsession.NewPostgresBackend(db, opts...)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.Migrate(ctx); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

// parseHashKeys reads a comma-separated list of hex or base64 keys of at
// least pgsession.MinHashKeyLength bytes each. It returns nil for an empty
// list. Errors name the position of a bad key, never its text.
func parseHashKeys(list string) ([][]byte, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var keys [][]byte
	for i, s := range strings.Split(list, ",") {
		k, ok := decodeKey(strings.TrimSpace(s))
		switch {
		case !ok:
			return nil, fmt.Errorf("hash key %d: neither hex nor base64", i+1)
		case len(k) < pgsession.MinHashKeyLength:
			return nil, fmt.Errorf("hash key %d: %d bytes, want at least %d (try `openssl rand -hex 32`)", i+1, len(k), pgsession.MinHashKeyLength)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// decodeKey decodes s as hex, else as base64 (standard or URL alphabet,
// padded or not).
func decodeKey(s string) ([]byte, bool) {
	if s == "" {
		return nil, false
	}
	if k, err := hex.DecodeString(s); err == nil {
		return k, true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			return k, true
		}
	}
	return nil, false
}

// randomKey returns a fresh 32-byte hash key.
func randomKey() []byte {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (Go 1.24+)
	return key
}

// isLoopback reports whether addr is a loopback address, where browsers
// keep Secure cookies over plain HTTP. An unspecified address (":8080")
// also listens on the network, so it is not.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// redactURL returns dsn with any password hidden, for logs. A key=value
// connection string is not shown at all.
func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "(connection string)"
	}
	return u.Redacted()
}
