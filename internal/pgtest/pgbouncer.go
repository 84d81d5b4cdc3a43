package pgtest

import (
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
)

// PgBouncer is a throwaway PgBouncer in pool_mode = transaction in front of
// the test server (URL()), owned by one test.
type PgBouncer struct {
	port           int
	user, database string
}

// NewPgBouncer starts a PgBouncer in transaction mode on a free port,
// forwarding every database to the test server, and stops it when t ends.
// Clients may log in as anyone (auth_type = any); PgBouncer connects to the
// server with the test URL's user and password. It skips t when no
// pgbouncer binary is found (on PATH or /usr/sbin), except under CI=true,
// where it fails. As root it runs PgBouncer as the postgres user, since
// PgBouncer refuses to run as root.
func NewPgBouncer(t testing.TB) *PgBouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr == nil {
			bin, err = "/usr/sbin/pgbouncer", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pgtest: no pgbouncer binary (CI requires it: apt-get install pgbouncer)")
		}
		t.Skip("pgtest: SKIPPING, no pgbouncer binary (apt-get install pgbouncer)")
	}
	server, err := url.Parse(URL())
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", redact(URL()), err)
	}
	host, port := server.Hostname(), server.Port()
	if port == "" {
		port = "5432"
	}
	p := &PgBouncer{port: freePort(t), user: server.User.Username(), database: strings.TrimPrefix(server.Path, "/")}
	conn := fmt.Sprintf("host=%s port=%s user=%s", host, port, p.user)
	if pw, ok := server.User.Password(); ok {
		conn += " password=" + pw
	}
	dir, err := os.MkdirTemp("", "pgsession-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 10
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = %s
`, conn, p.port, filepath.Join(dir, "pgbouncer.log"))
	cfg := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(cfg, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-q", cfg)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: pgbouncer refuses root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, f := range []string{dir, cfg} {
			if err := os.Chown(f, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: start pgbouncer: %v", err)
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgtest: pgbouncer exited: %v\n%s%s", err, out, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: pgbouncer does not accept connections on port %d", p.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL returns a connection URL through the PgBouncer, with params (such
// as "default_query_exec_mode=exec", or "") added to its query.
func (p *PgBouncer) URL(params string) string {
	u := fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", p.user, p.port, p.database)
	if params != "" {
		u += "&" + params
	}
	return u
}

// Open returns a connection pool through the PgBouncer for driverName
// ("postgres" or "pgx"), closed when t ends.
func (p *PgBouncer) Open(t testing.TB, driverName, params string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(driverName, p.URL(params))
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		t.Fatalf("pgtest: connect through pgbouncer: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
