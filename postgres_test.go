package pgsession_test

import (
	"context"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// newPostgres returns a migrated backend on a table of its own.
func newPostgres(t testing.TB, db *sqlx.DB, opts ...pgsession.PostgresOption) (*pgsession.PostgresBackend, string) {
	t.Helper()
	table := pgtest.Schema(t, db) + ".sessions"
	b := pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, table
}

func TestPostgresBackend(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	pgsessiontest.TestBackend(t, func(t *testing.T) pgsession.Backend {
		b, _ := newPostgres(t, db)
		return b
	})
}

// The backend works with any database/sql PostgreSQL driver: pgx's stdlib.
func TestPostgresBackendPgx(t *testing.T) {
	db := pgtest.Open(t, "pgx")
	pgsessiontest.TestBackend(t, func(t *testing.T) pgsession.Backend {
		b, _ := newPostgres(t, db)
		return b
	})
}
