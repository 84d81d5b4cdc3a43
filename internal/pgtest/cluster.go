package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// Cluster is a throwaway PostgreSQL server a test owns, so it may stop and
// restart it.
type Cluster struct {
	t      testing.TB
	bindir string
	dir    string
	port   int
	extra  []string // server settings, "name=value"
}

// NewCluster initialises and starts a cluster in a temporary directory,
// removed when t ends. It skips t when no initdb is found (on PATH or under
// /usr/lib/postgresql/*/bin), except under CI=true, where it fails. As root
// it runs the server as the postgres user.
//
// Each setting ("log_statement=all") is passed to the server as -c.
func NewCluster(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	bindir := ""
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real // a link on PATH: the other tools are next to the target
		}
		bindir = filepath.Dir(p)
	} else if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Strings(dirs)
		bindir = dirs[len(dirs)-1]
	}
	if bindir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("pgtest: no initdb to start a throwaway cluster (CI requires it)")
		}
		t.Skip("pgtest: SKIPPING, no initdb to start a throwaway cluster")
	}
	dir, err := os.MkdirTemp("", "pgsession-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, bindir: bindir, dir: dir, port: freePort(t), extra: settings}
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres", dir).Run(); err != nil {
			t.Fatalf("pgtest: chown: %v", err)
		}
	}
	c.run("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust")
	c.Start()
	t.Cleanup(func() {
		_ = c.cmd("pg_ctl", "-D", c.data(), "-m", "immediate", "stop").Run()
		_ = os.RemoveAll(dir)
	})
	return c
}

// URL is the cluster's connection URL, with the given application_name.
func (c *Cluster) URL(app string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&application_name=%s", c.port, app)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, c.dir)
	for _, s := range c.extra {
		opts += " -c " + s
	}
	c.run("pg_ctl", "-D", c.data(), "-w", "-l", filepath.Join(c.dir, "server.log"), "-o", opts, "start")
}

// Log returns what the server has logged so far.
func (c *Cluster) Log() string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "server.log"))
	if err != nil {
		c.t.Fatalf("pgtest: server log: %v", err)
	}
	return string(b)
}

// Stop stops the server at once (immediate mode), cutting every connection.
func (c *Cluster) Stop() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) cmd(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(c.bindir, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	if out, err := c.cmd(name, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("pgtest: %s: %v\n%s", name, err, out)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StopFast stops the server in fast mode: sessions are ended and
// transactions rolled back, then a clean shutdown.
func (c *Cluster) StopFast() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "stop")
}
