package pgtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Addr is the cluster's "host:port".
func (c *Cluster) Addr() string { return "127.0.0.1:" + strconv.Itoa(c.port) }

// Port is the cluster's port.
func (c *Cluster) Port() int { return c.port }

// NewReplica makes a streaming replica of c with pg_basebackup -R, reaching
// c at primaryAddr ("host:port", c's own address or a proxy in front of
// it, which the replica then streams through too), starts it and waits
// until it streams. It is stopped and removed when the test ends. It skips
// the test when pg_basebackup is missing, except under CI=true.
func (c *Cluster) NewReplica(primaryAddr string) *Cluster {
	c.t.Helper()
	if _, err := os.Stat(filepath.Join(c.bindir, "pg_basebackup")); err != nil {
		if os.Getenv("CI") == "true" {
			c.t.Fatalf("pgtest: no pg_basebackup in %s (CI requires it)", c.bindir)
		}
		c.t.Skipf("pgtest: SKIPPING, no pg_basebackup in %s", c.bindir)
	}
	dir, err := os.MkdirTemp("", "pgsession-replica-")
	if err != nil {
		c.t.Fatal(err)
	}
	r := &Cluster{t: c.t, bindir: c.bindir, dir: dir, port: freePort(c.t)}
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres", dir).Run(); err != nil {
			c.t.Fatalf("pgtest: chown: %v", err)
		}
	}
	c.t.Cleanup(func() {
		_ = r.cmd("pg_ctl", "-D", r.data(), "-m", "immediate", "stop").Run()
		_ = os.RemoveAll(dir)
	})
	host, port, err := net.SplitHostPort(primaryAddr)
	if err != nil {
		c.t.Fatalf("pgtest: replica of %q: %v", primaryAddr, err)
	}
	r.run("pg_basebackup", "-h", host, "-p", port, "-U", "postgres", "-D", r.data(), "-R", "-X", "stream", "-c", "fast")
	r.Start()
	r.WaitFor("the replica to stream", `SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'`, 1)
	return r
}

// Promote promotes a replica to primary and waits until it accepts writes.
func (c *Cluster) Promote() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-w", "promote")
	c.WaitFor("the promoted replica to leave recovery", `SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END`, 0)
}

// Exec runs SQL statements on the cluster through psql.
func (c *Cluster) Exec(sql string) string {
	c.t.Helper()
	out, err := c.cmd("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port),
		"-U", "postgres", "-d", "postgres", "-c", sql).CombinedOutput()
	if err != nil {
		c.t.Fatalf("pgtest: psql %q: %v\n%s", sql, err, out)
	}
	return string(out)
}

// WaitFor waits up to 30s until query (one integer) returns want, and
// fails the test after that.
func (c *Cluster) WaitFor(what, query string, want int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.cmd("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port),
			"-U", "postgres", "-d", "postgres", "-c", query).Output()
		if n, perr := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && perr == nil && n == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("pgtest: timed out waiting for %s (%q = %q, %v)", what, query, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WalReceiverPID returns the pid of a replica's WAL receiver, to stop it
// with SIGSTOP and stall synchronous replication.
func (c *Cluster) WalReceiverPID() int {
	c.t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(c.Exec(`SELECT pid FROM pg_stat_wal_receiver`)))
	if err != nil {
		c.t.Fatalf("pgtest: no WAL receiver: %v", err)
	}
	return pid
}
