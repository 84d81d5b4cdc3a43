package pgstore_test

import "github.com/pgsession/pgsession/internal/pgtest"

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
