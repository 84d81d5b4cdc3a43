package systemtest_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/XSAM/otelsql"
	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// lib/pq wrapped by otelsql (the usual OpenTelemetry instrumentation),
// behind PgBouncer in transaction mode, in the default mode and with
// WithPreparedStatements: concurrent writes to one session, logins and
// logouts lose nothing and fail nothing (pgtest.PoolerLoad), and the
// server's statement log shows every statement that touches the session
// table sent as one simple Query message: none as the extended protocol's
// two messages, whose second the pooler may send to a server connection
// where the statement is another client's.
func TestOtelsqlLibPQBehindPgBouncer(t *testing.T) {
	cluster := pgtest.NewCluster(t, "log_statement=all", "log_min_error_statement=panic")
	bouncer, err := pgtest.StartPgBouncer(cluster.URL("pgsession_otelsql"), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bouncer.Stop)
	admin, err := sqlx.Open("postgres", cluster.URL("pgsession_admin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	for name, opts := range map[string][]pgsession.PostgresOption{"default": nil, "prepared": {pgsession.WithPreparedStatements()}} {
		t.Run(name, func(t *testing.T) {
			sqldb, err := otelsql.Open("postgres", bouncer.URL(""))
			if err != nil {
				t.Fatal(err)
			}
			db := sqlx.NewDb(sqldb, "postgres")
			t.Cleanup(func() { _ = db.Close() })
			db.SetMaxOpenConns(40) // more clients than PgBouncer's 10 server connections
			plan, err := pgsession.NewPostgresBackend(db, opts...).StatementMode(context.Background())
			if want := "SQL PREPARE/EXECUTE, values inlined (lib/pq, not proven direct)"; err != nil || plan != want {
				t.Errorf("plan = %q, %v; want %q", plan, err, want)
			}
			pgtest.PoolerLoad(t, admin, db, opts...)
		})
	}
	log := cluster.Log()
	extended := regexp.MustCompile(`(?m)LOG:  execute [^:]*: .*key_hash`)
	simple := regexp.MustCompile(`(?m)LOG:  statement: (DO .*; )?EXECUTE pgsession_`)
	nExt, nSimple := len(extended.FindAllString(log, -1)), len(simple.FindAllString(log, -1))
	t.Logf("server log: %d session statements as EXECUTE in one Query message, %d in the extended protocol", nSimple, nExt)
	if nExt != 0 || nSimple < 1000 {
		t.Errorf("session statements: %d in the extended protocol (want 0), %d as EXECUTE (want the load's, over 1000)\n%s",
			nExt, nSimple, strings.Join(extended.FindAllString(log, 5), "\n"))
	}
}
