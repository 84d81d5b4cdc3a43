package pgsession

import (
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/memstore"
	"github.com/pgsession/pgsession/pgstore"
)

// This file holds what an application needs to choose and wire a backend,
// the store of its sessions (Config.Backend). The contract a backend
// implements is package backend; the built-in backends are packages
// pgstore (PostgreSQL) and memstore (process memory).

// PostgresBackend stores sessions in a PostgreSQL table. It is an alias of
// pgstore.Backend, so its methods are documented there, not here:
//
//	go doc github.com/pgsession/pgsession/pgstore Backend
//	go doc github.com/pgsession/pgsession/pgstore Backend.StatementMode
//
// An application calls Migrate (create or upgrade the table) or Check (the
// table is there and has the right shape) at startup; Schema returns the
// SQL Migrate applies, for a migration tool; StatementMode says how the
// backend sends its statements; Distribute shards the table over Citus;
// Close releases the driver prepared statements it holds (never the
// database). Load, Apply, DeleteExpired and the principal methods are the
// backend contract (package backend), which the Manager calls. Package
// pgstore also holds ErrNoTable, ErrSchemaMismatch and ReadDeadlineDialer.
type PostgresBackend = pgstore.Backend

// PostgresOption configures a PostgresBackend.
type PostgresOption = pgstore.Option

// MemoryBackend keeps sessions in process memory, with the same semantics
// as PostgresBackend, for development and tests. It is an alias of
// memstore.Backend, whose methods are documented there
// (go doc github.com/pgsession/pgsession/memstore Backend).
type MemoryBackend = memstore.Backend

// NewPostgresBackend returns a backend that stores sessions in db, a
// *sqlx.DB of any database/sql PostgreSQL driver (lib/pq, pgx's stdlib).
// Call its Migrate (or Check) once at startup to create or check the
// table. Unless an option says otherwise, it picks the fastest correct way
// of sending its statements from what the connection proves about itself;
// see pgstore.New.
func NewPostgresBackend(db *sqlx.DB, opts ...PostgresOption) *PostgresBackend {
	return pgstore.New(db, opts...)
}

// NewMemoryBackend returns an empty in-memory backend; see memstore.New.
func NewMemoryBackend() *MemoryBackend { return memstore.New() }

// WithTable stores sessions in the named table, optionally
// schema-qualified ("app.sessions"); see pgstore.WithTable.
func WithTable(name string) PostgresOption { return pgstore.WithTable(name) }

// WithQueryTimeout bounds each database call of the backend; see
// pgstore.WithQueryTimeout.
func WithQueryTimeout(d time.Duration) PostgresOption { return pgstore.WithQueryTimeout(d) }

// WithPreparedStatements always runs the backend's statements as SQL
// PREPARE and EXECUTE under content-hashed names; see
// pgstore.WithPreparedStatements.
func WithPreparedStatements() PostgresOption { return pgstore.WithPreparedStatements() }

// WithDriverPreparedStatements always runs the backend's statements as the
// driver's prepared statements; see pgstore.WithDriverPreparedStatements.
func WithDriverPreparedStatements() PostgresOption { return pgstore.WithDriverPreparedStatements() }
