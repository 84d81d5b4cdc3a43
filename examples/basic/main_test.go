package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

func TestParseHashKeys(t *testing.T) {
	hexKey := strings.Repeat("ab", 32)
	const b64 = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=" // "abcdefghijklmnopqrstuvwxyz123456"
	keys, err := parseHashKeys(hexKey + ", " + b64 + "," + strings.TrimRight(b64, "="))
	if err != nil || len(keys) != 3 || len(keys[0]) != 32 || string(keys[1]) != "abcdefghijklmnopqrstuvwxyz123456" || string(keys[2]) != string(keys[1]) {
		t.Fatalf("parseHashKeys = %q, %v", keys, err)
	}
	for _, bad := range []string{"zz", "abcd", hexKey + ",short", hexKey + ",", "not base64 at all, certainly"} {
		if _, err := parseHashKeys(bad); err == nil {
			t.Errorf("parseHashKeys(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), hexKey) {
			t.Errorf("the error repeats a key: %v", err)
		}
	}
	if keys, err := parseHashKeys(" "); keys != nil || err != nil {
		t.Errorf("empty list = %v, %v", keys, err)
	}
}

// logRecorder collects the JSON log records of a run.
type logRecorder struct {
	mu      sync.Mutex
	records []map[string]any
	url     chan string // the "listening" record's url
}

func (l *logRecorder) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.records = append(l.records, rec)
	l.mu.Unlock()
	if rec["msg"] == "listening" {
		l.url <- rec["url"].(string)
	}
	return len(p), nil
}

// logged returns the messages logged at level ("INFO", "WARN", ...).
func (l *logRecorder) logged(level string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var msgs []string
	for _, r := range l.records {
		if r["level"] == level {
			msgs = append(msgs, r["msg"].(string))
		}
	}
	return strings.Join(msgs, "\n")
}

// start runs the command with args and the environment env until the test
// ends, and returns its URL and its log.
func start(t *testing.T, args []string, env map[string]string) (string, *logRecorder) {
	t.Helper()
	rec := &logRecorder{url: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, slog.New(slog.NewJSONHandler(rec, nil)), args, func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case u := <-rec.url:
		return u, rec
	case err := <-done:
		t.Fatalf("run ended before it listened: %v\nlog: %s", err, rec.logged("ERROR"))
	case <-time.After(30 * time.Second):
		t.Fatal("run did not start listening within 30s")
	}
	return "", nil
}

// get fetches u with the given cookie (if any) and returns the response and
// body.
func get(t *testing.T, u string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// all returns every record, as JSON lines.
func (l *logRecorder) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.records {
		line, _ := json.Marshal(r)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// waitCleanup waits until the janitor has logged a sweep, and returns the
// number of sessions the first sweep removed.
func waitCleanup(t *testing.T, log *logRecorder) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		log.mu.Lock()
		for _, r := range log.records {
			if r["msg"] == "pgsession: cleanup" {
				log.mu.Unlock()
				n, _ := r["removed"].(float64)
				return n
			}
		}
		log.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the janitor logged no sweep within 30s; log:\n%s", log.all())
	return 0
}

// login posts the login form the way a non-browser client does (no Origin,
// no Sec-Fetch-Site: cross-origin protection lets it through) and returns
// the response, redirect not followed.
func login(t *testing.T, base, name string) *http.Response {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(base+"/login", url.Values{"name": {name}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// writeFile writes content to a new file of the test and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With no flags the command runs on the memory backend with a random key,
// says so, runs the janitor, sets no cookie for an anonymous visit and a
// Secure one at login.
func TestRunDefaults(t *testing.T) {
	u, log := start(t, []string{"-addr", "127.0.0.1:0"}, nil)
	resp, body := get(t, u, nil)
	wantContains(t, "start page", body, anonymous)
	if sc := resp.Header["Set-Cookie"]; len(sc) != 0 {
		t.Errorf("an anonymous visit got Set-Cookie %q", sc)
	}
	resp = login(t, u, "ada")
	if cks := resp.Cookies(); resp.StatusCode != http.StatusSeeOther || len(cks) != 1 || !cks[0].Secure || !cks[0].HttpOnly {
		t.Errorf("login: %d, cookies %q: want 303 and one Secure HttpOnly session cookie", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	wantContains(t, "info log", log.logged("INFO"), "memory backend")
	wantContains(t, "warnings", log.logged("WARN"), "random key", "will not survive a restart")
	if w := log.logged("WARN"); strings.Contains(w, "beyond loopback") {
		t.Errorf("warns about Secure cookies on loopback: %s", w)
	}
	if n := waitCleanup(t, log); n != 0 {
		t.Errorf("the first sweep of an empty memory store removed %v sessions", n)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	key := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, map[string]string{"SESSION_HASH_KEY": "tooshort"}},
		{nil, map[string]string{"SESSION_HASH_KEY": key + ",tooshort"}},
		{[]string{"-hash-key-file", writeFile(t, key+"\ntooshort\n")}, nil},
		{[]string{"-hash-key-file", filepath.Join(t.TempDir(), "missing")}, nil},
		{[]string{"-hash-key", key}, nil}, // a secret on the command line: no such flag
		{[]string{"-database-url", "postgres://u:pw@127.0.0.1:1/db"}, nil},
		{[]string{"-database-url", "host=127.0.0.1 password=pw"}, nil},
		{[]string{"-database-url", "postgres://u@127.0.0.1:1/db", "-database-url-file", writeFile(t, "postgres://u@127.0.0.1:1/db")}, nil},
		{[]string{"stray"}, nil},
		{[]string{"-no-such-flag"}, nil},
	} {
		if err := run(t.Context(), quiet, append([]string{"-addr", "127.0.0.1:0"}, tc.args...), func(k string) string { return tc.env[k] }); err == nil {
			t.Errorf("run %q with %q succeeded", tc.args, tc.env)
		}
	}
}

// The command never shows a secret it was given: not in its log, not in
// the error it returns, not at /debug/vars (issue 10.5).
func TestRunKeepsSecrets(t *testing.T) {
	const password = "S3cret-PASSWORD-never-shown"
	key := strings.Repeat("5e", 32)

	// A working configuration: PostgreSQL with a password (trust
	// authentication ignores it) and the hash key from the environment.
	db := pgtest.Open(t, "postgres")
	schema := pgtest.Schema(t, db)
	dsn, err := url.Parse(pgtest.URL())
	if err != nil || dsn.Scheme == "" {
		t.Skipf("DATABASE_URL is not a URL (%v)", err)
	}
	if dsn.User == nil {
		dsn.User = url.User("postgres")
	}
	dsn.User = url.UserPassword(dsn.User.Username(), password)
	q := dsn.Query()
	q.Set("search_path", schema)
	dsn.RawQuery = q.Encode()
	u, log := start(t, []string{"-addr", "127.0.0.1:0"}, map[string]string{"DATABASE_URL": dsn.String(), "SESSION_HASH_KEY": key})
	login(t, u, "ada")
	waitCleanup(t, log)
	_, vars := get(t, u+"/debug/vars", nil)
	for _, secret := range []string{password, key, "cmdline", "memstats"} {
		if strings.Contains(vars, secret) {
			t.Errorf("/debug/vars shows %q:\n%s", secret, vars)
		}
	}
	if all := log.all(); strings.Contains(all, password) || strings.Contains(all, key) {
		t.Errorf("the log shows a secret:\n%s", all)
	}

	// Configurations that fail, where driver and net/url errors would
	// quote the connection string.
	for _, bad := range []string{
		"postgres://u:" + password + "@127.0.0.1:notaport/db",
		"postgres://u:" + password + "@[::1/db",
		"postgres://u:" + password + " x@127.0.0.1:5432/db",
		"postgres://u:" + password + "@127.0.0.1:1/db?sslmode=disable",
		"postgres://u:" + password + "@127.0.0.1:5432/db?sslmode=bogus",
		"host=127.0.0.1 password=" + password + " port=x",
		"host=127.0.0.1 password='" + password + "' sslmode=bogus",
		"password=" + password + " missing-equals",
	} {
		var buf pgtest.LogBuffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		for _, env := range []map[string]string{
			{"DATABASE_URL": bad, "SESSION_HASH_KEY": key},
			{"DATABASE_URL_FILE": writeFile(t, bad+"\n"), "SESSION_HASH_KEY": key + ",00"},
		} {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // should it start after all
			err := run(ctx, log, []string{"-addr", "127.0.0.1:0"}, func(k string) string { return env[k] })
			cancel()
			if err == nil {
				t.Errorf("run with DATABASE_URL %q succeeded", bad)
				continue
			}
			if msg := err.Error(); strings.Contains(msg, password) || strings.Contains(msg, key) {
				t.Errorf("the error shows a secret: %v", err)
			}
		}
		if out := buf.String(); strings.Contains(out, password) || strings.Contains(out, key) {
			t.Errorf("the log shows a secret:\n%s", out)
		}
	}
}

// With $DATABASE_URL the command migrates and uses PostgreSQL and its
// janitor sweeps expired sessions; instances on one database share
// sessions, and a list of keys rotates the secret without logging anyone
// out.
func TestRunPostgres(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	schema := pgtest.Schema(t, db)
	dsn, err := url.Parse(pgtest.URL())
	if err != nil || dsn.Scheme == "" {
		t.Skipf("DATABASE_URL is not a URL (%v); cannot point the command at a schema of its own", err)
	}
	q := dsn.Query()
	q.Set("search_path", schema) // lib/pq passes it on: "sessions" is created in the test's schema
	dsn.RawQuery = q.Encode()
	keyA, keyB := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	env := map[string]string{"DATABASE_URL": dsn.String(), "SESSION_HASH_KEY": keyA}

	// An expired session, for the janitor.
	if _, err := newPostgresBackend(t.Context(), db, pgsession.WithTable(schema+".sessions")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO "` + schema + `".sessions (key_hash, data, created_at, accessed_at)
		VALUES (sha256('expired'), '{}', now() - interval '2 days', now() - interval '2 days')`); err != nil {
		t.Fatal(err)
	}

	// The old deployment signs with key A.
	old, log := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie"}, env)
	wantContains(t, "info log", log.logged("INFO"), "using PostgreSQL")
	if w := log.logged("WARN"); w != "" {
		t.Errorf("warnings with a hash key and a loopback address: %s", w)
	}
	if n := waitCleanup(t, log); n != 1 {
		t.Errorf("the janitor's first sweep removed %v sessions, want the expired one", n)
	}
	if n := pgtest.Count(t, db, `SELECT count(*) FROM "`+schema+`".sessions`); n != 0 {
		t.Errorf("%d sessions left after the sweep, want 0", n)
	}
	resp := login(t, old, "ada")
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d, cookies %q; want 303 and a cookie", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	signedA := resp.Cookies()[0]
	if signedA.Secure {
		t.Error("-insecure-cookie left the cookie Secure")
	}
	if n := pgtest.Count(t, db, `SELECT count(*) FROM "`+schema+`".sessions WHERE principal = 'ada' AND data->>'user' = 'ada'`); n != 1 {
		t.Errorf("%d stored sessions of ada, want 1", n)
	}

	// The new deployment lists B first in its key file (which beats
	// $SESSION_HASH_KEY): it still reads A's cookie and re-signs it with B.
	rolled, _ := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie", "-hash-key-file", writeFile(t, keyB+"\n"+keyA+"\n")}, env)
	resp, body := get(t, rolled, signedA)
	wantContains(t, "the key-A cookie after the rollout", body, "Logged in as <b>ada</b>", visits("1"))
	if len(resp.Cookies()) != 1 {
		t.Fatalf("cookies %q, want the session re-signed", resp.Header["Set-Cookie"])
	}
	signedB := resp.Cookies()[0]

	// Once A is dropped, only B's cookies verify.
	onlyB, _ := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie"},
		map[string]string{"DATABASE_URL": dsn.String(), "SESSION_HASH_KEY_FILE": writeFile(t, keyB)})
	_, body = get(t, onlyB, signedB)
	wantContains(t, "the re-signed cookie", body, "Logged in as <b>ada</b>", visits("2"))
	_, body = get(t, onlyB, signedA)
	wantContains(t, "a cookie signed with a dropped key", body, anonymous)
}
