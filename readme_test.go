package pgsession_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession/internal/pgtest"
)

// goBlock matches a fenced Go code block of a Markdown file.
var goBlock = regexp.MustCompile("(?s)\n```go\n(.*?)\n```\n")

// TestReadmeQuickStart builds the README's first Go block, the quick start,
// as a program of its own module that uses this checkout of pgsession, so
// the program a newcomer pastes cannot rot. It uses the module cache the
// package's own build filled, and takes a few seconds.
//
// Then it runs the program with DATABASE_URL or SESSION_HASH_KEY missing (or
// the key too short, or neither hex nor base64): each must exit non-zero at
// once, naming the variable, before it touches any database. lib/pq would otherwise connect to
// its defaults (PGHOST and the like) and Migrate would create the table in
// whatever database that is. PGHOST and PGPORT point at a closed port, so a
// connection attempt would show as a different error. Last, with both set
// and the database unreachable, the program must fail at startup (Migrate),
// not serve. With a database (skipped without one, a failure under
// CI=true) and port 8000 free, the program must say it listens, serve a
// login to a same-origin POST, and refuse a cross-site one (403, no
// cookie): http.CrossOriginProtection.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a separate module; skipped under -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := goBlock.FindSubmatch(readme)
	if m == nil || !strings.HasPrefix(string(m[1]), "package main\n") {
		t.Fatal("README.md's first ```go block must be the quick start, a complete program starting with \"package main\"")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The root's go.mod and go.sum pin the versions of sqlx and lib/pq the
	// program imports, so nothing needs resolving from the network.
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mod = regexp.MustCompile(`(?m)^module .*$`).ReplaceAll(mod, []byte("module readmequickstart"))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": mod, "go.sum": sum, "main.go": m[1]} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(goTool, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s\nthe program (README.md's first ```go block):\n%s", strings.Join(args, " "), err, out, m[1])
		}
	}
	run("mod", "edit", "-require=github.com/pgsession/pgsession@v0.0.0", "-replace=github.com/pgsession/pgsession="+root)
	bin := filepath.Join(dir, "quickstart")
	run("build", "-o", bin, ".")
	run("vet", ".")

	const (
		hexKey    = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" // 32 bytes
		base64Key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="                     // the same
		shortKey  = "0123456789abcdef0123456789abcdef"                                 // 16 bytes in hex
		closed    = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable"
	)
	for _, tc := range []struct {
		name, dsn, hashKey string
		want               string // in the output
		wantNot            []string
	}{
		// Nothing may reach a database: no dial, no lib/pq error.
		{"no DATABASE_URL", "", hexKey, "DATABASE_URL", []string{"dial", "connect", "pq:"}},
		{"no SESSION_HASH_KEY", closed, "", "SESSION_HASH_KEY", []string{"dial", "connect", "pq:"}},
		{"short SESSION_HASH_KEY", closed, shortKey, "SESSION_HASH_KEY", []string{"dial", "connect", "pq:"}},
		{"SESSION_HASH_KEY neither hex nor base64", closed, strings.Repeat("not a key! ", 8), "SESSION_HASH_KEY", []string{"dial", "connect", "pq:"}},
		// Both set (hex or base64): the program checks the table at
		// startup, so an unreachable database ends it there instead of at
		// the first login.
		{"database unreachable", closed, hexKey, "127.0.0.1:1", nil},
		{"database unreachable, base64 key", closed, base64Key, "127.0.0.1:1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, elapsed, err := runQuickStart(t, bin, tc.dsn, tc.hashKey)
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("want the program to exit non-zero, got %v after %v:\n%s", err, elapsed, out)
			}
			if elapsed > 5*time.Second {
				t.Errorf("exited after %v, want at once", elapsed)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not name %s:\n%s", tc.want, out)
			}
			for _, bad := range tc.wantNot {
				if strings.Contains(out, bad) {
					t.Errorf("output mentions %q, so the program tried a database before checking its settings:\n%s", bad, out)
				}
			}
		})
	}
	t.Run("serves, refusing cross-site POSTs", func(t *testing.T) {
		testQuickStartServes(t, bin, base64Key)
	})
}

// testQuickStartServes runs the quick start on a schema of its own in the
// test database and checks what a newcomer tries first: it says where it
// listens, a cross-site POST /login is refused with no cookie, and a
// same-origin one signs user 42 in.
func testQuickStartServes(t *testing.T, bin, hashKey string) {
	const site = "http://localhost:8000"
	db := pgtest.Open(t, "postgres") // skips without a database, fails under CI=true
	if ln, err := net.Listen("tcp", "localhost:8000"); err != nil {
		t.Skipf("port 8000, the quick start's, is taken: %v", err)
	} else {
		_ = ln.Close()
	}
	// lib/pq sends unknown URL parameters as run-time parameters, so the
	// program's unqualified "sessions" table lands in the test's schema.
	u, err := url.Parse(pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", pgtest.Schema(t, db))
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = quickStartEnv(u.String(), hashKey)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	for !strings.Contains(out.String(), "listening on "+site) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the program exited (%v) before it said it listens on %s:\n%s", err, site, out.String())
		case <-ctx.Done():
			t.Fatalf("the program did not say it listens on %s:\n%s", site, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, cookie string, header map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, site+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, out.String())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	if _, body := do("GET", "/", "", nil); body != "signed in: false, user 0\n" {
		t.Errorf("GET / anonymous: %q", body)
	}
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://attacker.example"},
	} {
		if resp, body := do("POST", "/login", "", h); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("cross-site POST /login (%v): %s, cookies %v, want 403 and none (CrossOriginProtection)\n%s", h, resp.Status, resp.Cookies(), body)
		}
	}
	resp, body := do("POST", "/login", "", map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("same-origin POST /login: %s, cookies %v, want 303 and the session cookie\n%s", resp.Status, resp.Cookies(), body)
	}
	c := resp.Cookies()[0]
	if _, body := do("GET", "/", c.Name+"="+c.Value, nil); body != "signed in: true, user 42\n" {
		t.Errorf("GET / with the login's cookie: %q", body)
	}
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading
// test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runQuickStart runs the built quick start with the given DATABASE_URL and
// SESSION_HASH_KEY ("" leaves a variable unset) and no other PostgreSQL
// settings but PGHOST and PGPORT on a closed port. A program that has not
// exited after 20s is killed (it would be serving).
func runQuickStart(t *testing.T, bin, dsn, hashKey string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = quickStartEnv(dsn, hashKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	return out.String(), time.Since(start), err
}

// quickStartEnv returns the environment for the quick start: the given
// DATABASE_URL and SESSION_HASH_KEY ("" leaves a variable unset), and no
// other PostgreSQL settings but PGHOST and PGPORT on a closed port.
func quickStartEnv(dsn, hashKey string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || name == "SESSION_HASH_KEY" || strings.HasPrefix(name, "PG") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PGHOST=127.0.0.1", "PGPORT=1", "PGCONNECT_TIMEOUT=2")
	if dsn != "" {
		env = append(env, "DATABASE_URL="+dsn)
	}
	if hashKey != "" {
		env = append(env, "SESSION_HASH_KEY="+hashKey)
	}
	return env
}
