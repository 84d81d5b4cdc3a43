package pgsession_test

import "github.com/pgsession/pgsession/internal/pgtest"

// The helpers these tests share with pgstore's and systemtest's.
var (
	insertSessions = pgtest.InsertSessions
	newManager     = pgtest.NewManager
)
