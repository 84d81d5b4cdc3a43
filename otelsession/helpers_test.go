package otelsession_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// backends are the stores every test runs on.
var backends = []struct {
	name string
	new  func(t *testing.T) backend.Backend
}{
	{"memory", func(*testing.T) backend.Backend { return pgsession.NewMemoryBackend() }},
	{"postgres", func(t *testing.T) backend.Backend { return newPostgres(t) }},
}

// newPostgres returns a migrated PostgreSQL backend on $DATABASE_URL whose
// table has a random name and is dropped when t ends. Without DATABASE_URL
// the test is skipped, except under CI=true, where it fails.
func newPostgres(t *testing.T) *pgsession.PostgresBackend {
	t.Helper()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("DATABASE_URL is required under CI=true (scripts/test sets it)")
		}
		t.Skip("SKIPPING the PostgreSQL test: DATABASE_URL is not set (scripts/test sets it, or export DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable')")
	}
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatalf("open %s: %v", "$DATABASE_URL", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "otelsession_test_" + hex.EncodeToString(b[:])
	pg := pgsession.NewPostgresBackend(db, pgsession.WithTable(table))
	if err := pg.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	t.Cleanup(func() {
		_ = pg.Close()
		if _, err := db.Exec("DROP TABLE IF EXISTS " + pq.QuoteIdentifier(table)); err != nil {
			t.Errorf("drop table %s: %v", table, err)
		}
	})
	return pg
}

// errDown is the failing backend's error. Its message names a row ID, as
// some store errors do: the spans must record it without.
var errDown = errors.New("injected failure: database is down (row 5f4dcc3b5aa765d61d8327deb882cf99e4a3c4b4d9b2f4c8a1b3e5d7f9a1c3e5)")

// failing is a Backend that fails every Load and Apply while fail is set.
type failing struct {
	backend.Backend
	fail atomic.Bool
}

func (f *failing) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.Backend.Load(ctx, id, sid)
}

func (f *failing) Apply(ctx context.Context, a backend.Action) error {
	if f.fail.Load() {
		return errDown
	}
	return f.Backend.Apply(ctx, a)
}

// failingMode is failing for a store that reports its statement mode.
type failingMode struct {
	*failing
	moder interface {
		StatementMode(context.Context) (string, error)
	}
}

func (f failingMode) StatementMode(ctx context.Context) (string, error) {
	return f.moder.StatementMode(ctx)
}

// withFailure returns b behind a switch that makes it fail, keeping its
// StatementMode if it has one.
func withFailure(b backend.Backend) (backend.Backend, *atomic.Bool) {
	f := &failing{Backend: b}
	if m, ok := b.(interface {
		StatementMode(context.Context) (string, error)
	}); ok {
		return failingMode{f, m}, &f.fail
	}
	return f, &f.fail
}
