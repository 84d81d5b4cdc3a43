package pgsession_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goBlock matches a fenced Go code block of a Markdown file.
var goBlock = regexp.MustCompile("(?s)\n```go\n(.*?)\n```\n")

// TestReadmeQuickStart builds the README's first Go block, the quick start,
// as a program of its own module that uses this checkout of pgsession, so
// the program a newcomer pastes cannot rot. It uses the module cache the
// package's own build filled, and takes a few seconds.
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
	run("build", "-o", filepath.Join(dir, "quickstart"), ".")
	run("vet", ".")
}
