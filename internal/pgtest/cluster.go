package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a throwaway PostgreSQL server a test owns, so it may stop and
// restart it.
type Cluster struct {
	t      testing.TB
	bindir string
	dir    string
	port   int
	extra  []string // server settings, "name=value"
	server string   // the server binary pg_ctl starts ("": the installation's postgres)
}

// NewCluster initialises and starts a cluster in a temporary directory,
// removed when t ends. It skips t when no initdb is found (on PATH or under
// /usr/lib/postgresql/*/bin), except under CI=true, where it fails. As root
// it runs the server as the postgres user.
//
// Each setting ("log_statement=all") is passed to the server as -c.
func NewCluster(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	return newCluster(t, nil, settings)
}

// NewCallgrindCluster is NewCluster with the server and every process it
// forks (each connection's backend) run under valgrind --tool=callgrind,
// which writes the instructions each one executed to outDir/cg.PID when it
// exits (see CallgrindTotal). outDir must be writable by the server's user.
// It fails t when valgrind is not installed.
func NewCallgrindCluster(t testing.TB, outDir string, settings ...string) *Cluster {
	t.Helper()
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		t.Fatal("pgtest: valgrind not found (apt-get install valgrind)")
	}
	return newCluster(t, func(c *Cluster) {
		c.server = filepath.Join(c.dir, "postgres-callgrind")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --tool=callgrind --trace-children=yes --callgrind-out-file=%s/cg.%%p %s \"$@\"\n",
			valgrind, outDir, filepath.Join(c.bindir, "postgres"))
		if err := os.WriteFile(c.server, []byte(script), 0o755); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}, settings)
}

// CallgrindTotal returns the instructions executed by the process pid of
// a NewCallgrindCluster (a connection's backend: SELECT pg_backend_pid()),
// waiting up to timeout for callgrind to write them when the process exits,
// and removes its file.
func CallgrindTotal(outDir string, pid int, timeout time.Duration) (int64, error) {
	path := filepath.Join(outDir, fmt.Sprintf("cg.%d", pid))
	for end := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if total, ok := strings.CutPrefix(line, "totals: "); ok {
					_ = os.Remove(path)
					return strconv.ParseInt(strings.TrimSpace(total), 10, 64)
				}
			}
		}
		if time.Now().After(end) {
			return 0, fmt.Errorf("pgtest: no callgrind total in %s after %v", path, timeout)
		}
	}
}

func newCluster(t testing.TB, prepare func(*Cluster), settings []string) *Cluster {
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
	if prepare != nil {
		prepare(c)
	}
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
	args := []string{"-D", c.data(), "-w", "-l", filepath.Join(c.dir, "server.log"), "-o", opts}
	if c.server != "" {
		args = append(args, "-p", c.server, "-t", "600") // valgrind starts slowly
	}
	c.run("pg_ctl", append(args, "start")...)
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
