// Package pgtest connects tests to a real PostgreSQL and gives each test a
// schema of its own, so tests can run in parallel without seeing each other.
//
// The server is $DATABASE_URL when set, else the local default
// postgres://postgres@127.0.0.1:5432/postgres. When none answers, tests skip
// with the reason, except under CI=true, where they fail: CI must never pass
// by skipping the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// DefaultURL is the server tried when $DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// URL returns the database URL tests use.
func URL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

var (
	mu    sync.Mutex
	pools = map[string]*sqlx.DB{}
)

// Open returns a shared connection pool for driverName ("postgres" for
// lib/pq, "pgx" for pgx's stdlib; the caller imports the driver). The test is
// skipped (failed under CI=true) when the server does not answer.
func Open(t testing.TB, driverName string) *sqlx.DB {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if db, ok := pools[driverName]; ok {
		return db
	}
	db, err := sqlx.Open(driverName, URL())
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: PostgreSQL at %s is required under CI=true: %v", redact(URL()), err)
		}
		t.Skipf("pgtest: SKIPPING PostgreSQL test, no server at %s (%v); set DATABASE_URL or run scripts/test", redact(URL()), err)
	}
	pools[driverName] = db
	return db
}

// Schema creates a fresh schema for t, drops it when t ends, and returns its
// name.
func Schema(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "pgsession_test_" + hex.EncodeToString(b)
	if _, err := db.Exec("CREATE SCHEMA " + pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec("DROP SCHEMA " + pq.QuoteIdentifier(name) + " CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}

// Count returns the result of a single-value COUNT-like query.
func Count(t testing.TB, db *sqlx.DB, query string, args ...any) int {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("pgtest: %s: %v", query, err)
	}
	return int(n.Int64)
}

// redact hides a password in u.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable DATABASE_URL)"
	}
	return p.Redacted()
}

// NewBackend returns a migrated PostgreSQL backend on driverName ("postgres"
// or "pgx") whose table lives in a schema of its own, and the table's
// qualified name.
func NewBackend(t testing.TB, driverName string, opts ...pgsession.PostgresOption) (*pgsession.PostgresBackend, string) {
	t.Helper()
	db := Open(t, driverName)
	table := Schema(t, db) + ".sessions"
	b := pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatalf("pgtest: Migrate: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, table
}

// Drivers returns the database/sql PostgreSQL drivers that tests taking a
// driver name run on: "postgres" (lib/pq), and "pgx" too when pgx's stdlib
// is linked into the test binary (as the systemtest module does).
func Drivers() []string {
	if slices.Contains(sql.Drivers(), "pgx") {
		return []string{"postgres", "pgx"}
	}
	return []string{"postgres"}
}

// Backends returns constructors of fresh backends, memory and PostgreSQL
// (lib/pq), for tests that run on both.
func Backends() map[string]func(testing.TB) backend.Backend {
	return map[string]func(testing.TB) backend.Backend{
		"memory": func(testing.TB) backend.Backend { return pgsession.NewMemoryBackend() },
		"postgres": func(t testing.TB) backend.Backend {
			b, _ := NewBackend(t, "postgres")
			return b
		},
	}
}

// NewBackendOn returns a backend on db (a pool through a pooler, say),
// migrated through db, whose table lives in a schema of its own created on
// the direct test server, and the table's qualified name.
func NewBackendOn(t testing.TB, db *sqlx.DB, opts ...pgsession.PostgresOption) (*pgsession.PostgresBackend, string) {
	t.Helper()
	return NewBackendVia(t, Open(t, "postgres"), db, opts...)
}

// NewBackendVia is NewBackendOn with the schema created through admin, a
// direct pool to the server that db reaches.
func NewBackendVia(t testing.TB, admin, db *sqlx.DB, opts ...pgsession.PostgresOption) (*pgsession.PostgresBackend, string) {
	t.Helper()
	table := Schema(t, admin) + ".sessions"
	b := pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatalf("pgtest: Migrate: %v", err)
	}
	return b, table
}
