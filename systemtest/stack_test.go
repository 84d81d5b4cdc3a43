package systemtest_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/XSAM/otelsql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

const (
	planPgxDirect = "driver prepared statements (pgx, direct connection)"
	planPgxExec   = "plain statements, values as parameters, in pgx's exec mode (pgx, not proven direct)"
)

// pgxUnixDSN returns a pgx DSN for the test server's Unix socket, or "" if
// it has none here.
func pgxUnixDSN(t *testing.T) string {
	u, err := url.Parse(pgtest.URL())
	if err != nil || u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	for _, dir := range []string{"/var/run/postgresql", "/run/postgresql", "/tmp"} {
		if _, err := os.Stat(dir + "/.s.PGSQL." + port); err == nil {
			return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", dir, port, u.User.Username(), strings.TrimPrefix(u.Path, "/"))
		}
	}
	return ""
}

// StatementMode tells the truth for pgx: proven direct over TCP and over
// the Unix socket (the driver's prepared statements); through PgBouncer
// with pgx's defaults, bare, in otelsql and from a pgxpool, each statement
// in pgx's exec mode; with the DSN's own default_query_exec_mode that
// prepares nothing, that mode.
func TestStatementModePgx(t *testing.T) {
	pgtest.Open(t, "pgx")
	bouncer := pgtest.NewPgBouncer(t)
	openPgx := func(t *testing.T, dsn string) *sqlx.DB {
		db, err := sqlx.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	cases := []struct {
		name string
		open func(t *testing.T) *sqlx.DB
		want string
	}{
		{"direct-tcp", func(t *testing.T) *sqlx.DB { return openPgx(t, pgtest.URL()) }, planPgxDirect},
		{"pgbouncer-defaults", func(t *testing.T) *sqlx.DB { return openPgx(t, bouncer.URL("")) }, planPgxExec},
		{"pgbouncer-exec", func(t *testing.T) *sqlx.DB { return openPgx(t, bouncer.URL("default_query_exec_mode=exec")) },
			"plain statements, values as parameters, in pgx's default_query_exec_mode (exec) (pgx, not proven direct)"},
		{"pgbouncer-simple-protocol", func(t *testing.T) *sqlx.DB { return openPgx(t, bouncer.URL("default_query_exec_mode=simple_protocol")) },
			"plain statements, values as parameters, in pgx's default_query_exec_mode (simple protocol) (pgx, not proven direct)"},
		{"pgbouncer-otelsql", func(t *testing.T) *sqlx.DB { return openOtelsqlPgx(t, bouncer.URL("")) }, planPgxExec},
		{"pgbouncer-pgxpool", func(t *testing.T) *sqlx.DB { return openPgxPool(t, bouncer.URL("")) }, planPgxExec},
		{"direct-otelsql", func(t *testing.T) *sqlx.DB { return openOtelsqlPgx(t, pgtest.URL()) }, planPgxDirect},
	}
	if dsn := pgxUnixDSN(t); dsn != "" {
		cases = append(cases, struct {
			name string
			open func(t *testing.T) *sqlx.DB
			want string
		}{"direct-unix", func(t *testing.T) *sqlx.DB { return openPgx(t, dsn) }, planPgxDirect})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pgsession.NewPostgresBackend(tc.open(t)).StatementMode(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("plan = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// forEachPgxBouncer runs f on each way a pgx user hands a pool through a
// PgBouncer, with pgx's defaults, to the backend (stdlib, otelsql, a
// pgxpool), each pool with more connections (40) than PgBouncer has server
// connections (10); admin reaches the test server directly.
func forEachPgxBouncer(t *testing.T, f func(t *testing.T, admin, db *sqlx.DB)) {
	admin := pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for name, open := range map[string]func(t *testing.T) *sqlx.DB{
		"stdlib":  func(t *testing.T) *sqlx.DB { return bouncer.Open(t, "pgx", "") },
		"otelsql": func(t *testing.T) *sqlx.DB { return openOtelsqlPgx(t, bouncer.URL("")) },
		"pgxpool": func(t *testing.T) *sqlx.DB { return openPgxPool(t, bouncer.URL("")) },
	} {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			db.SetMaxOpenConns(40)
			f(t, admin, db)
		})
	}
}

// pgx with its own defaults (cache_statement: named prepared statements)
// behind PgBouncer 1.18 in transaction mode, requests only (the table is
// migrated directly): 16 clients, each incrementing its own session 60
// times through the middleware, with more pool connections than PgBouncer
// has server connections. The backend sends its statements in pgx's exec
// mode: every request answers 200 and every increment is there.
func TestPgBouncerPgxDefaultsRequests(t *testing.T) {
	forEachPgxBouncer(t, func(t *testing.T, admin, db *sqlx.DB) {
		_, table := pgtest.NewBackendVia(t, admin, admin)
		b := pgsession.NewPostgresBackend(db, pgsession.WithTable(table))
		if mode, err := b.StatementMode(context.Background()); err != nil || mode != planPgxExec {
			t.Fatalf("plan = %q, %v; want %q", mode, err, planPgxExec)
		}
		m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
			Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := pgsession.FromContext(r.Context())
			var n int
			if _, err := s.Get("n", &n); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_ = s.Set("n", n+1)
			fmt.Fprint(w, n+1)
		})))
		defer srv.Close()
		const clients, rounds = 16, 60
		var failed, wrong atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				cookie := ""
				for i := 1; i <= rounds; i++ {
					req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
					if cookie != "" {
						req.Header.Set("Cookie", cookie)
					}
					resp, err := srv.Client().Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						if failed.Add(1) == 1 {
							t.Errorf("status %d: %s", resp.StatusCode, body)
						}
						continue
					}
					if c := resp.Header.Get("Set-Cookie"); c != "" {
						cookie, _, _ = strings.Cut(c, ";")
					}
					if string(body) != strconv.Itoa(i) {
						wrong.Add(1)
					}
				}
			})
		}
		wg.Wait()
		t.Logf("%d requests: %d failed, %d lost an increment", clients*rounds, failed.Load(), wrong.Load())
		if failed.Load() != 0 || wrong.Load() != 0 {
			t.Errorf("%d failed, %d lost an increment; want none", failed.Load(), wrong.Load())
		}
	})
}

// The same through Migrate and the whole conformance suite (cleanups
// included), and pgtest.PoolerLoad (logins, logouts, concurrent writes to
// one session): Migrate's, Check's, the cleanup's and Distribute's own
// statements are sent in pgx's exec mode too (plan.withMode).
func TestPgBouncerPgxDefaults(t *testing.T) {
	forEachPgxBouncer(t, func(t *testing.T, admin, db *sqlx.DB) {
		t.Run("conformance", func(t *testing.T) {
			pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
				b, _ := pgtest.NewBackendVia(t, admin, db)
				return b
			})
		})
		t.Run("load", func(t *testing.T) { pgtest.PoolerLoad(t, admin, db) })
	})
}

// Where pgx's exec mode cannot be chosen per statement (here a wrapper
// that converts every argument with database/sql's default converter, so
// that a pgx.QueryExecMode reaches pgx as an integer), Migrate and Check
// refuse pgx's defaults through a pooler, naming the fix, once and without
// a stuttered prefix; the fix named works.
func TestPgBouncerPgxUnpassableModeRefused(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	open := func(t *testing.T, params string) *sqlx.DB {
		connector, err := stdlib.GetDefaultDriver().(driver.DriverContext).OpenConnector(bouncer.URL(params))
		if err != nil {
			t.Fatal(err)
		}
		db := sqlx.NewDb(sql.OpenDB(convertingConnector{connector}), "pgx")
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	table := pgtest.Schema(t, admin) + ".sessions"
	b := pgsession.NewPostgresBackend(open(t, ""), pgsession.WithTable(table))
	for name, call := range map[string]func(context.Context) error{"Migrate": b.Migrate, "Check": b.Check} {
		err := call(context.Background())
		if err == nil || !strings.Contains(err.Error(), "default_query_exec_mode=exec") ||
			strings.Count(err.Error(), "pgsession:") != 1 {
			t.Errorf("%s = %v; want a refusal naming default_query_exec_mode=exec, prefixed once", name, err)
		}
	}
	mode, err := b.StatementMode(context.Background())
	if err == nil || mode != "plain statements, values as parameters, in pgx's default_query_exec_mode (cache statement) (pgx, not proven direct)" {
		t.Errorf("StatementMode = %q, %v; want pgx's own default, with the refusal", mode, err)
	}
	fixed := pgsession.NewPostgresBackend(open(t, "default_query_exec_mode=exec"), pgsession.WithTable(table))
	if err := fixed.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate with the fix: %v", err)
	}
	if _, err := fixed.Load(context.Background(), randomID(), pgsession.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Load with the fix = %v, want ErrNotFound", err)
	}
}

// convertingConnector wraps pgx's connections in a wrapper that does not
// implement driver.NamedValueChecker: database/sql then converts each
// argument with driver.DefaultParameterConverter.
type convertingConnector struct{ driver.Connector }

func (c convertingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return convertingConn{conn}, nil
}

type convertingConn struct{ inner driver.Conn }

func (c convertingConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }
func (c convertingConn) Close() error                              { return c.inner.Close() }
func (c convertingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c convertingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c convertingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.inner.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c convertingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.inner.(driver.QueryerContext).QueryContext(ctx, query, args)
}

// openOtelsqlPgx opens url with pgx's stdlib inside otelsql, closed when
// t ends.
func openOtelsqlPgx(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	sqldb, err := otelsql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqldb.Close() })
	return sqlx.NewDb(sqldb, "pgx")
}

// openPgxPool opens url as a pgxpool handed to database/sql through
// stdlib, as pgxpool users do, closed when t ends.
func openPgxPool(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := sqlx.NewDb(stdlib.OpenDBFromPool(pool), "pgx")
	t.Cleanup(func() { _ = db.Close() })
	return db
}
