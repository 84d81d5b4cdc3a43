// Command basic is a small web app on pgsession: login and logout with key
// rotation and a "Remember me" box (a 30-day persistent session, else a
// browser-session cookie), flash messages shown once, a visit counter for
// logged-in users, a "Your devices" page that lists the user's sessions
// and signs out one, all other or all devices, server-sent events that
// read the session while the response streams, a health check that
// freezes the session, and the session statistics at /debug/vars.
// Anonymous visitors get no session: only a login stores one (and a
// logout, for its message, until the next page shows it), and a janitor
// (RunCleanup) removes expired sessions every 15 minutes. Every response
// carries security headers (see setSecurityHeaders): no page can be
// framed by another, not even a same-site one, and the Content-Security-
// Policy allows scripts and styles from the app only.
//
//	go -C examples run ./basic                                   # memory backend
//	DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' go -C examples run ./basic
//
// then open http://127.0.0.1:8080.
//
// Flags (each has an environment variable; the flag wins):
//
//	-addr               listen address (default 127.0.0.1:8080)
//	-database-url       PostgreSQL URL without a password, $DATABASE_URL; empty: the memory backend
//	-database-url-file  file holding the PostgreSQL URL, $DATABASE_URL_FILE
//	-hash-key-file      file holding the hash keys, $SESSION_HASH_KEY_FILE
//	-insecure-cookie    drop the cookie's Secure attribute (see below)
//	-trace-stdout       print an OpenTelemetry trace of every request to standard output
//
// The hash keys can also come from $SESSION_HASH_KEY itself.
//
// With no database URL the app keeps sessions in memory and says so; they
// end with the process. With one, it connects with lib/pq, creates or
// checks the "sessions" table (Migrate) and keeps sessions there.
//
// # Secrets
//
// The hash keys and a database password are secrets, so the app takes them
// only from the environment or from a file (a Kubernetes or Docker secret,
// a systemd credential), never from a flag: a command line is visible to
// every user of the machine (ps, /proc/PID/cmdline) and often ends up in
// logs. It refuses a -database-url that holds a password; put the password
// in $DATABASE_URL, in -database-url-file, or in $PGPASSWORD or ~/.pgpass
// (which lib/pq reads). The app never prints a secret: flags' defaults are
// empty, logs and errors show database URLs with the password replaced by
// "xxxxx", errors about a hash key give its position, not its text, and
// /debug/vars shows the session statistics only.
//
// # Hash keys
//
// Each key is hex or base64 (hex is tried first) and at least 32 bytes,
// for example from "openssl rand -hex 32": the variable and format the
// README's quick start reads too. A comma-separated (or, in a
// file, newline-separated) list rotates the secret: the first key signs
// new cookies and every key verifies, so put a new key first and drop the
// old one once its cookies have expired. With no key at all the app makes
// a random one and warns that sessions will not survive a restart, which
// is fine for a try-out and wrong for anything else.
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
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/pgstore"
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
// ends, then shuts down gracefully. The error it returns never holds a
// secret it was given.
func run(ctx context.Context, log *slog.Logger, args []string, getenv func(string) string) error {
	var sec secrets
	err := runApp(ctx, log, args, getenv, &sec)
	return sec.scrub(err)
}

// runApp is run, recording in sec each secret it reads so that run can
// scrub them from the error.
func runApp(ctx context.Context, log *slog.Logger, args []string, getenv func(string) string, sec *secrets) error {
	fs := flag.NewFlagSet("basic", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen `address`")
	// Defaults stay empty, not the environment's values, so -help never
	// prints a password or a hash key.
	dbURL := fs.String("database-url", "", "PostgreSQL `URL` without a password (default $DATABASE_URL); none: the memory backend")
	dbURLFile := fs.String("database-url-file", "", "`file` holding the PostgreSQL URL (default $DATABASE_URL_FILE)")
	hashKeyFile := fs.String("hash-key-file", "", "`file` holding the hash keys, hex or base64, 32 bytes or more each, one per line or comma-separated; the first signs, all verify (default $SESSION_HASH_KEY_FILE, else the keys in $SESSION_HASH_KEY)")
	insecure := fs.Bool("insecure-cookie", false, "drop the cookie's Secure attribute, for plain HTTP to a host other than localhost or loopback (or for Safari)")
	traceOut := fs.Bool("trace-stdout", false, "print an OpenTelemetry trace of every request (its span, the session's load and save) to standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dbURL != "" {
		// It is on the command line already; scrub it from errors anyway.
		sec.addDSN(*dbURL)
		if hasPassword(*dbURL) {
			return errors.New("-database-url holds a password, which every user of the machine can read from the command line: " +
				"use $DATABASE_URL, -database-url-file, $PGPASSWORD or ~/.pgpass instead")
		}
	}

	dsn, err := setting(*dbURL, *dbURLFile, getenv, "DATABASE_URL")
	if err != nil {
		return err
	}
	sec.addDSN(dsn)
	keyList, err := setting("", *hashKeyFile, getenv, "SESSION_HASH_KEY")
	if err != nil {
		return err
	}
	sec.addKeys(keyList)
	keys, err := parseHashKeys(keyList)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = [][]byte{randomKey()}
		log.Warn("no $SESSION_HASH_KEY or -hash-key-file: signing cookies with a random key, so sessions will not survive a restart; " +
			"set SESSION_HASH_KEY to the output of `openssl rand -hex 32` to keep them")
	}

	var store backend.Backend
	if dsn == "" {
		store = pgsession.NewMemoryBackend()
		log.Info("using the memory backend: sessions live in this process only and end with it; give -database-url or $DATABASE_URL for PostgreSQL")
	} else {
		db, err := openPostgres(ctx, dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		pg, err := newPostgresBackend(ctx, db)
		if err != nil {
			return err
		}
		defer pg.Close()
		store = pg
		log.Info("using PostgreSQL", "database", redactURL(dsn), "table", pgstore.DefaultTable)
	}

	store, traced := traceStdout(*traceOut, store)
	m, err := pgsession.New(managerConfig(store, keys, *insecure, log))
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

	// The janitor: expired sessions are ignored by requests, but only a
	// sweep removes their rows (or, in memory, their entries).
	cleanupCtx, stopCleanup := context.WithCancel(ctx)
	cleanupDone := make(chan struct{})
	go func() {
		defer close(cleanupDone)
		_ = m.RunCleanup(cleanupCtx, cleanupInterval) // returns when cleanupCtx ends
	}()
	defer func() { stopCleanup(); <-cleanupDone }()

	srv := &http.Server{
		Handler:           traced(newApp(m, log)),
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

// parseHashKeys reads a list of hex or base64 keys of at least
// pgsession.MinHashKeyLength bytes each, separated by commas or newlines.
// It returns nil for an empty list. Errors name the position of a bad key,
// never its text.
func parseHashKeys(list string) ([][]byte, error) {
	list = strings.TrimSpace(strings.ReplaceAll(list, "\r\n", "\n"))
	if list == "" {
		return nil, nil
	}
	var keys [][]byte
	for i, s := range strings.Split(strings.ReplaceAll(list, "\n", ","), ",") {
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

// setting returns a secret setting: value if a flag gave it, else the
// contents of file (a flag), else of the file named by $NAME_FILE, else
// $NAME. A file's surrounding white space is dropped. Errors name the file,
// never its contents.
func setting(value, file string, getenv func(string) string, name string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("give either the %s setting or its file, not both", name)
	case value != "":
		return value, nil
	case file == "":
		file = getenv(name + "_FILE")
	}
	if file == "" {
		return getenv(name), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err) // the path, not the contents
	}
	return strings.TrimSpace(string(b)), nil
}

// secrets are the secret strings run has read, to be removed from its
// error: a driver or net/url error may quote a whole connection string.
type secrets struct {
	list []string
}

// addDSN records a database URL or key=value connection string and the
// password it holds, if any.
func (s *secrets) addDSN(dsn string) {
	s.add(dsn)
	s.add(dsnPassword(dsn))
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		s.add(u.String()) // as net/url prints it
		p, _ := u.User.Password()
		s.add(p) // unescaped
	}
}

// addKeys records each key of a hash key list.
func (s *secrets) addKeys(list string) {
	s.add(list)
	for _, k := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		s.add(strings.TrimSpace(k))
	}
}

// add records v. Strings shorter than 4 bytes are left out: replacing
// them everywhere would garble the message (a port "5000" after a bad key
// "00"), and the whole connection string is recorded as well.
func (s *secrets) add(v string) {
	if len(v) >= 4 {
		s.list = append(s.list, v)
	}
}

// scrub returns err with every recorded secret replaced by "xxxxx", or err
// itself if it holds none. The longest secrets go first, so a password is
// not half-replaced as part of a shorter one.
func (s *secrets) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	list := slices.Clone(s.list)
	slices.SortFunc(list, func(a, b string) int { return len(b) - len(a) })
	clean := msg
	for _, v := range list {
		clean = strings.ReplaceAll(clean, v, "xxxxx")
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}

// hasPassword reports whether a database URL or connection string holds a
// password.
func hasPassword(dsn string) bool { return dsnPassword(dsn) != "" }

// keyValuePassword matches the password of a key=value connection string,
// quoted or not.
var keyValuePassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// dsnPassword returns the password of a database URL or key=value
// connection string, or "". It also finds the password of a URL that
// net/url cannot parse, since errors quote those whole.
func dsnPassword(dsn string) string {
	if m := keyValuePassword.FindStringSubmatch(dsn); m != nil && !strings.Contains(dsn, "://") {
		return strings.Trim(m[1], "'")
	}
	_, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	i := strings.LastIndex(rest, "@")
	if i < 0 {
		return ""
	}
	_, pass, _ := strings.Cut(rest[:i], ":")
	return pass
}
