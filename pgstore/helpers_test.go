package pgstore_test

import (
	"os"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// exampleKey is a hash key for the Managers of these tests.
var exampleKey = []byte("an-example-secret-of-32-bytes!!!")

// The helpers these tests share with the root package's and systemtest's.
var (
	randomID       = pgtest.RandomID
	insertSessions = pgtest.InsertSessions
	newManager     = pgtest.NewManager
	withApp        = pgtest.WithApp
	openPool       = pgtest.OpenPool
	seed           = pgtest.Seed
	cleanupLocks   = pgtest.CleanupLocks
	roundTrip      = pgtest.RoundTrip
	hostile        = pgtest.Hostile
)

// concurrently runs f n times at once, as n instances would, and fails t,
// naming what, if any run fails.
func concurrently(t testing.TB, n int, what string, f func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- f() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// beginOldTable begins a transaction on db that creates, in schema, the
// table of an earlier version (testdata/fixture, as that version's
// schema.sql was): the caller adds its rows and commits.
func beginOldTable(t testing.TB, db *sqlx.DB, schema, fixture string) *sqlx.Tx {
	t.Helper()
	script, err := os.ReadFile("testdata/" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	tx := db.MustBegin()
	tx.MustExec(`SET LOCAL search_path TO ` + pq.QuoteIdentifier(schema))
	tx.MustExec(string(script))
	return tx
}
