//go:build linux

package pgstore_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
// server over the server's Unix socket in dir: the case where the server,
// like on a direct Unix connection, sees a Unix client whose backend is the
// postmaster's child.
func unixBouncer(t *testing.T, dir, port string) *pgtest.PgBouncer {
	t.Helper()
	u, _ := url.Parse(pgtest.URL())
	return pgtest.NewPgBouncerTo(t, fmt.Sprintf("postgres://%s@%s?host=%s&port=%s&sslmode=disable",
		u.User.Username(), u.Path, url.QueryEscape(dir), port))
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
	bouncer := unixBouncer(t, dir, port)
	t.Run("pgbouncer-unix", func(t *testing.T) {
		db := openUnix(t, "postgres", bouncer.SocketDir(), strconv.Itoa(bouncer.Port()))
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
		if got := statementMode(t, bouncer.Open(t, "postgres", "")); got != planPooledPQ {
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
