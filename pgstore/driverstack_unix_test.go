//go:build linux

package pgstore_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// The local server's Unix socket directory, and its port, for the test
// server (pgtest.URL) when it listens on one here; the test skips
// otherwise.
func unixSocket(t *testing.T) (dir, port string) {
	t.Helper()
	pgtest.Open(t, "postgres")
	u, err := url.Parse(pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		t.Skipf("the test server %s is not local", h)
	}
	port = u.Port()
	if port == "" {
		port = "5432"
	}
	for _, dir := range []string{"/var/run/postgresql", "/run/postgresql", "/tmp"} {
		if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL."+port)); err == nil {
			return dir, port
		}
	}
	t.Skipf("no Unix socket of the test server on port %s", port)
	return "", ""
}

// openUnix opens a pool of driver to the server's Unix socket in dir
// (the test server's database and user), closed when t ends.
func openUnix(t *testing.T, driver, dir, port string) *sqlx.DB {
	t.Helper()
	u, _ := url.Parse(pgtest.URL())
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", dir, port, u.User.Username(), strings.TrimPrefix(u.Path, "/"))
	db, err := sqlx.Open(driver, dsn)
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		t.Fatalf("connect over the Unix socket %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// unixBouncer starts a throwaway PgBouncer in transaction mode listening
// on a Unix socket (and on a TCP port of 127.0.0.1) and reaching the test
// server over the server's Unix socket: the case where the server, like on
// a direct Unix connection, sees a Unix client whose backend is the
// postmaster's child. It returns the socket directory and the port.
func unixBouncer(t *testing.T, serverDir, serverPort string) (dir string, port int) {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("no pgbouncer binary")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err = os.MkdirTemp("", "pgsession-unixbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	u, _ := url.Parse(pgtest.URL())
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s user=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = any
pool_mode = transaction
default_pool_size = 4
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = %s
`, serverDir, serverPort, u.User.Username(), port, dir, filepath.Join(dir, "pgbouncer.log"))
	cfg := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(cfg, []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-q", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user for PgBouncer")
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		for _, f := range []string{dir, cfg} {
			if err := os.Chown(f, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	sock := filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return dir, port
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer exited: %v\n%s%s", err, out, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer does not listen on %s", sock)
		}
	}
}

func statementMode(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	got, err := pgstore.New(db).StatementMode(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

const (
	planDirectPQ = "driver prepared statements (lib/pq, direct connection)"
	planPooledPQ = "SQL PREPARE/EXECUTE, values inlined (lib/pq, not proven direct)"
)

// lib/pq over the server's Unix socket is proven direct (bare and in a
// driver wrapper), and the backend picks the driver's prepared statements;
// through a PgBouncer on a Unix socket it is not, although the server sees
// a Unix client there too; nor through that PgBouncer's TCP port while this
// process holds a direct Unix connection to the server; nor while this
// process holds any other Unix stream connection.
func TestStatementPlanUnixSocket(t *testing.T) {
	dir, port := unixSocket(t)
	for _, driver := range []string{"postgres", pgtest.WrappedPQ} {
		t.Run(driver+"/direct", func(t *testing.T) {
			if got := statementMode(t, openUnix(t, driver, dir, port)); got != planDirectPQ {
				t.Errorf("plan = %q, want %q", got, planDirectPQ)
			}
		})
	}
	bdir, bport := unixBouncer(t, dir, port)
	t.Run("pgbouncer-unix", func(t *testing.T) {
		db := openUnix(t, "postgres", bdir, strconv.Itoa(bport))
		var client any
		if err := db.QueryRow(`SELECT inet_client_addr()`).Scan(&client); err != nil || client != nil {
			t.Fatalf("the server sees client %v, %v; want a Unix socket (the pooler's)", client, err)
		}
		if got := statementMode(t, db); got != planPooledPQ {
			t.Errorf("plan through PgBouncer on a Unix socket = %q, want %q", got, planPooledPQ)
		}
	})
	t.Run("pgbouncer-tcp-beside-direct-unix", func(t *testing.T) {
		direct := openUnix(t, "postgres", dir, port) // held open: a Unix socket to the postmaster
		if err := direct.Ping(); err != nil {
			t.Fatal(err)
		}
		db, err := sqlx.Open("postgres", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", bport))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if got := statementMode(t, db); got != planPooledPQ {
			t.Errorf("plan through PgBouncer's TCP port = %q, want %q", got, planPooledPQ)
		}
	})
	t.Run("direct-beside-another-unix-connection", func(t *testing.T) {
		ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "other.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := statementMode(t, openUnix(t, "postgres", dir, port)); got != planPooledPQ {
			t.Errorf("plan with another Unix connection held = %q, want %q", got, planPooledPQ)
		}
	})
}
