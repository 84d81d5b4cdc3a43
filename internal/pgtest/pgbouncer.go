package pgtest

import (
	"errors"
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
// a PostgreSQL server: the test server (NewPgBouncer) or any
// (StartPgBouncer, for the load benchmark).
type PgBouncer struct {
	port           int
	user, database string
	dir            string
	cmd            *exec.Cmd
	exited         chan error
}

// ErrNoPgBouncer is returned by StartPgBouncer when no pgbouncer binary is
// found (on PATH or in /usr/sbin).
var ErrNoPgBouncer = errors.New("pgtest: no pgbouncer binary (apt-get install pgbouncer)")

// NewPgBouncer starts a PgBouncer in transaction mode on a free port,
// forwarding every database to the test server, and stops it when t ends.
// It skips t when no pgbouncer binary is found, except under CI=true, where
// it fails. See StartPgBouncer.
func NewPgBouncer(t testing.TB) *PgBouncer {
	t.Helper()
	return NewPgBouncerTo(t, URL())
}

// NewPgBouncerTo is NewPgBouncer in front of the server of serverURL (see
// StartPgBouncer).
func NewPgBouncerTo(t testing.TB, serverURL string) *PgBouncer {
	t.Helper()
	p, err := StartPgBouncer(serverURL, 10)
	switch {
	case errors.Is(err, ErrNoPgBouncer) && os.Getenv("CI") != "true":
		t.Skip("pgtest: SKIPPING, no pgbouncer binary (apt-get install pgbouncer)")
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// StartPgBouncer starts a PgBouncer in transaction mode, with poolSize
// server connections, on a free port of 127.0.0.1 and on a Unix socket in
// SocketDir, forwarding every database to the server of serverURL (whose
// host may be a Unix socket directory, given as the URL's "host"
// parameter, as lib/pq and pgx take it). Clients may log in as anyone
// (auth_type = any); PgBouncer connects to the server with serverURL's user
// and password. As root it runs PgBouncer as the postgres user, since
// PgBouncer refuses to run as root. Stop it with Stop.
func StartPgBouncer(serverURL string, poolSize int) (*PgBouncer, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			return nil, ErrNoPgBouncer
		}
		bin = "/usr/sbin/pgbouncer"
	}
	server, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse %s: %w", redact(serverURL), err)
	}
	host, port := server.Hostname(), server.Port()
	if host == "" { // a Unix socket: postgres://user@/db?host=/dir&port=N
		host, port = server.Query().Get("host"), server.Query().Get("port")
	}
	if port == "" {
		port = "5432"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &PgBouncer{port: ln.Addr().(*net.TCPAddr).Port, user: server.User.Username(),
		database: strings.TrimPrefix(server.Path, "/"), exited: make(chan error, 1)}
	ln.Close()
	conn := fmt.Sprintf("host=%s port=%s user=%s", host, port, p.user)
	if pw, ok := server.User.Password(); ok {
		conn += " password=" + pw
	}
	if p.dir, err = os.MkdirTemp("", "pgsession-pgbouncer-"); err != nil {
		return nil, err
	}
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = any
pool_mode = transaction
default_pool_size = %d
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = %s
`, conn, p.port, p.dir, poolSize, filepath.Join(p.dir, "pgbouncer.log"))
	cfg := filepath.Join(p.dir, "pgbouncer.ini")
	if err := os.WriteFile(cfg, []byte(ini), 0o600); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	p.cmd = exec.Command(bin, "-q", cfg)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{}
	killWithParent(p.cmd)
	if os.Geteuid() == 0 {
		if err := runAsPostgres(p.cmd, p.dir, cfg); err != nil {
			_ = os.RemoveAll(p.dir)
			return nil, err
		}
	}
	out := &strings.Builder{}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, fmt.Errorf("pgtest: start pgbouncer: %w", err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case err := <-p.exited:
			log, _ := os.ReadFile(filepath.Join(p.dir, "pgbouncer.log"))
			_ = os.RemoveAll(p.dir)
			return nil, fmt.Errorf("pgtest: pgbouncer exited: %v\n%s%s", err, out, log)
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("pgtest: pgbouncer does not accept connections on port %d", p.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the PgBouncer (SIGTERM, then SIGKILL after 5s) and removes its
// files.
func (p *PgBouncer) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	_ = os.RemoveAll(p.dir)
}

// runAsPostgres makes cmd run as the postgres user, owning files.
func runAsPostgres(cmd *exec.Cmd, files ...string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtest: pgbouncer refuses root and there is no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, f := range files {
		if err := os.Chown(f, uid, gid); err != nil {
			return err
		}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return nil
}

// SocketDir returns the directory of the PgBouncer's Unix socket (a host
// for lib/pq and pgx; the socket is .s.PGSQL.<port> in it, port as in URL).
func (p *PgBouncer) SocketDir() string { return p.dir }

// Port returns the PgBouncer's port, of its TCP listener and its Unix
// socket alike.
func (p *PgBouncer) Port() int { return p.port }

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
