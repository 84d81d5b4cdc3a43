package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

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

// With no flags the command runs on the memory backend with a random key,
// says so, and sets a Secure cookie.
func TestRunDefaults(t *testing.T) {
	u, log := start(t, []string{"-addr", "127.0.0.1:0"}, nil)
	resp, body := get(t, u, nil)
	wantContains(t, "start page", body, visits("1"))
	if cks := resp.Cookies(); len(cks) != 1 || !cks[0].Secure || !cks[0].HttpOnly {
		t.Errorf("cookies %q: want one Secure HttpOnly session cookie", resp.Header["Set-Cookie"])
	}
	wantContains(t, "info log", log.logged("INFO"), "memory backend")
	wantContains(t, "warnings", log.logged("WARN"), "random key", "will not survive a restart")
	if w := log.logged("WARN"); strings.Contains(w, "beyond loopback") {
		t.Errorf("warns about Secure cookies on loopback: %s", w)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"-hash-key", "tooshort"}, {"-hash-key", strings.Repeat("ab", 32) + ",tooshort"}, {"stray"}, {"-no-such-flag"}} {
		if err := run(t.Context(), quiet, args, noEnv); err == nil {
			t.Errorf("run %q succeeded", args)
		}
	}
}

// With $DATABASE_URL the command migrates and uses PostgreSQL; instances
// on one database share sessions, and a comma-separated key list rotates
// the secret without logging anyone out.
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

	// The old deployment signs with key A.
	old, log := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie"}, env)
	wantContains(t, "info log", log.logged("INFO"), "using PostgreSQL")
	if w := log.logged("WARN"); w != "" {
		t.Errorf("warnings with a hash key and a loopback address: %s", w)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(old+"/login", url.Values{"name": {"ada"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
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

	// The new deployment lists B first (the flag beats $SESSION_HASH_KEY):
	// it still reads A's cookie and re-signs it with B.
	rolled, _ := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie", "-hash-key", keyB + "," + keyA}, env)
	resp, body := get(t, rolled, signedA)
	wantContains(t, "the key-A cookie after the rollout", body, "Logged in as <b>ada</b>", visits("1"))
	if len(resp.Cookies()) != 1 {
		t.Fatalf("cookies %q, want the session re-signed", resp.Header["Set-Cookie"])
	}
	signedB := resp.Cookies()[0]

	// Once A is dropped, only B's cookies verify.
	onlyB, _ := start(t, []string{"-addr", "127.0.0.1:0", "-insecure-cookie", "-hash-key", keyB}, env)
	_, body = get(t, onlyB, signedB)
	wantContains(t, "the re-signed cookie", body, "Logged in as <b>ada</b>", visits("2"))
	_, body = get(t, onlyB, signedA)
	wantContains(t, "a cookie signed with a dropped key", body, anonymous)
}
