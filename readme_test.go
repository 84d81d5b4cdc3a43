package pgsession_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// goBlock matches a fenced Go code block of a Markdown file.
var goBlock = regexp.MustCompile("(?s)\n```go\n(.*?)\n```\n")

// TestReadmeQuickStart builds the README's first Go block, the quick start,
// as a program of its own module that uses this checkout of pgsession, so
// the program a newcomer pastes cannot rot. It uses the module cache the
// package's own build filled, and takes a few seconds.
//
// Then it runs the program with DATABASE_URL or SESSION_SECRET missing (or
// the secret too short): each must exit non-zero at once, naming the missing
// variable, before it touches any database. lib/pq would otherwise connect to
// its defaults (PGHOST and the like) and Migrate would create the table in
// whatever database that is. PGHOST and PGPORT point at a closed port, so a
// connection attempt would show as a different error. Last, with both set
// and the database unreachable, the program must fail at startup (Migrate),
// not serve.
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
		secret = "0123456789abcdef0123456789abcdef" // 32 bytes
		closed = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable"
	)
	for _, tc := range []struct {
		name, dsn, secret string
		want              string // in the output
		wantNot           []string
	}{
		// Nothing may reach a database: no dial, no lib/pq error.
		{"no DATABASE_URL", "", secret, "DATABASE_URL", []string{"dial", "connect", "pq:"}},
		{"no SESSION_SECRET", closed, "", "SESSION_SECRET", []string{"dial", "connect", "pq:"}},
		{"short SESSION_SECRET", closed, "too-short", "SESSION_SECRET", []string{"dial", "connect", "pq:"}},
		// Both set: the program checks the table at startup, so an
		// unreachable database ends it there instead of at the first login.
		{"database unreachable", closed, secret, "127.0.0.1:1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, elapsed, err := runQuickStart(t, bin, tc.dsn, tc.secret)
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
}

// runQuickStart runs the built quick start with the given DATABASE_URL and
// SESSION_SECRET ("" leaves a variable unset) and no other PostgreSQL
// settings but PGHOST and PGPORT on a closed port. A program that has not
// exited after 20s is killed (it would be serving).
func runQuickStart(t *testing.T, bin, dsn, secret string) (string, time.Duration, error) {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || name == "SESSION_SECRET" || strings.HasPrefix(name, "PG") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PGHOST=127.0.0.1", "PGPORT=1", "PGCONNECT_TIMEOUT=2")
	if dsn != "" {
		env = append(env, "DATABASE_URL="+dsn)
	}
	if secret != "" {
		env = append(env, "SESSION_SECRET="+secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	return out.String(), time.Since(start), err
}
