package systemtest_test

import (
	"github.com/pgsession/pgsession/internal/pgtest"
)

// The helpers these tests share with the root package's and pgstore's.
var (
	randomID     = pgtest.RandomID
	randomName   = pgtest.RandomName
	newManager   = pgtest.NewManager
	withApp      = pgtest.WithApp
	openPool     = pgtest.OpenPool
	seed         = pgtest.Seed
	cleanupLocks = pgtest.CleanupLocks
	roundTrip    = pgtest.RoundTrip
	hostile      = pgtest.Hostile
)
