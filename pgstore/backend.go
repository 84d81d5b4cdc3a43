// Package pgstore is pgsession's PostgreSQL backend: sessions in one table,
// each read one indexed SELECT and each write one statement, through any
// database/sql PostgreSQL driver wrapped in *sqlx.DB (lib/pq, pgx's stdlib),
// behind a connection pooler or not, on PostgreSQL or Citus.
//
// Applications get one with pgsession.NewPostgresBackend and its options
// (pgsession.WithTable, ...), which forward to New and the options here;
// this package holds the rest of what a deployment may need: Migrate,
// Check and Schema for the table, Distribute for Citus, StatementMode,
// the sentinel errors ErrNoTable and ErrSchemaMismatch, and
// ReadDeadlineDialer for lib/pq.
//
// The files follow the backend's concerns: backend.go (the type, options,
// constructor), statements.go (the SQL), exec.go (running one statement:
// timeouts, retries, error advice), literal.go (values as SQL literals),
// prepared.go and driverstack.go (the statement modes and how the default
// picks one), rows.go (Load and Apply), principal.go, cleanup.go,
// migrate.go (schema creation, upgrade and checks), distribute.go (Citus)
// and dialer.go.
package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// DefaultTable is the table Backend uses unless WithTable says
// otherwise.
const DefaultTable = "sessions"

// DefaultQueryTimeout bounds each database call of a Backend unless
// WithQueryTimeout says otherwise.
const DefaultQueryTimeout = 5 * time.Second

// maxTableName leaves room for the index name suffixes within PostgreSQL's
// 63-byte identifier limit, so that no two index names can collide.
const maxTableName = 40

// ErrSchemaMismatch is returned by Migrate when the table exists with a shape
// that is not pgsession's (for example alexedwards/scs's "sessions" table).
var ErrSchemaMismatch = errors.New("pgsession: table exists with a different schema")

// ErrNoTable is reported by Check, and by the backend's other calls, when
// the session table does not exist: Migrate was not called, or the schema
// was not applied with the application's own migration tool (see Schema).
var ErrNoTable = errors.New("pgsession: session table does not exist")

// Backend stores sessions in a PostgreSQL table. It works with any
// database/sql PostgreSQL driver wrapped in *sqlx.DB (lib/pq, pgx's stdlib),
// also inside a tracing wrapper such as otelsql.
// Reads are one indexed SELECT by key hash; each write is one statement. It
// is safe for concurrent use.
type Backend struct {
	db      *sqlx.DB
	table   string // quoted, possibly schema-qualified
	base    string // unquoted table name without schema, for index names
	schema  string // unquoted schema, or "" for the search path
	timeout time.Duration
	watch   *watch        // of the statements in flight, when timeout > 0
	err     error         // a bad option, reported by every call
	mode    statementMode // the option given; plan is what it resolved to
	plan    atomic.Pointer[plan]
	probeMu sync.Mutex // one probe of the driver stack at a time
	stmts   sync.Map   // query template -> *preparedStatement or *sql.Stmt, see prepared.go

	distributed atomic.Int32 // distributedUnknown, distributedNo or distributedYes (Citus)
}

// Option configures a Backend.
type Option func(*Backend)

// WithTable stores sessions in the named table, optionally schema-qualified
// ("app.sessions"). Names are quoted, so any characters are safe; an empty
// name, more than one dot, or a table name longer than 40 bytes is an error
// reported by Migrate and every other call.
func WithTable(name string) Option {
	return func(b *Backend) { b.setTable(name) }
}

// WithQueryTimeout bounds each database call (load, save, cleanup), its
// wait for a pool connection included, so a stuck database fails requests
// instead of hanging them. Zero means DefaultQueryTimeout; negative means no
// bound beyond the request's context. The bound, and the end of the
// request's context, reach a statement in flight within 10 ms (an eighth of
// a timeout under 80 ms): one goroutine per Backend, running while
// statements are in flight, watches them, rather than a timer per statement.
func WithQueryTimeout(d time.Duration) Option {
	return func(b *Backend) {
		if d == 0 {
			d = DefaultQueryTimeout
		}
		b.timeout = d
	}
}

// WithPreparedStatements always runs each statement of the backend as SQL
// PREPARE and EXECUTE under a name that is a hash of its text (table
// included), its values inlined as literals: each call is one Query
// message, one round trip, and a name can only ever stand for that very
// statement, on any server connection. It is what the default picks for
// lib/pq (and unknown drivers) on a connection it cannot prove to be
// direct: correct behind a transaction pooler (PgBouncer
// pool_mode=transaction), where a server connection that lacks the
// statement answers "does not exist" and the backend prepares it in the
// same message as the EXECUTE (one implicit transaction, so one server
// connection). Give it to keep that mode even where the default would
// prove the connection direct, for example when a pooler may be put in
// front of the database later. With pgx, which names its own prepared
// statements by a hash of their text, values go as parameters, as in the
// default.
//
// Each server connection holds the backend's prepared statements (a dozen
// plans) until it closes. Of the two options, the last one given applies.
func WithPreparedStatements() Option {
	return func(b *Backend) { b.mode = modeExecute }
}

// WithDriverPreparedStatements always runs each statement of the backend
// as a prepared statement of the driver (a database/sql *sql.Stmt, which
// database/sql prepares once on each pool connection that runs it), its
// values sent as parameters: the fastest mode, with any driver. The
// default picks it by itself on a connection it proves to go straight to
// PostgreSQL (a TCP connection whose ends the server and this process
// agree on); give it only where that proof fails although no transaction
// pooler is in between: a Unix socket, a TCP proxy that is not a pooler,
// or a pooler that tracks prepared statements itself (PgBouncer 1.21 or
// later with max_prepared_statements set).
//
// Never give it behind a transaction pooler without prepared-statement
// support: lib/pq and pgx's stdlib name these statements by a
// per-connection counter ("1", "2", ...), so on the server connection such
// a pooler picks, a name can stand for a statement another client prepared
// there, and run it. Of the two options, the last one given applies.
//
// Each pool connection holds the backend's statements (a dozen) until it
// closes or the backend is closed (see Close).
func WithDriverPreparedStatements() Option {
	return func(b *Backend) { b.mode = modeDriver }
}

// New returns a backend that stores sessions in db. Call
// Migrate (or Check) once at startup to create or check the table.
//
// Unless an option says otherwise, the backend picks the fastest way of
// sending its statements that is correct on the connection it has, from
// what the connection proves about itself at the first call (Migrate,
// Check or a request), not from the driver's Go type, which a tracing
// wrapper hides: the driver's prepared statements on a TCP connection
// proven to go straight to PostgreSQL; behind a pooler, or wherever that
// is not proven, SQL PREPARE/EXECUTE under content-hashed names for lib/pq
// (see WithPreparedStatements), and parameters for pgx, which prepares
// statements under names derived from their text (behind PgBouncer before
// 1.21 give pgx default_query_exec_mode=exec). A wrong guess costs speed,
// never correctness. StatementMode tells what was picked.
func New(db *sqlx.DB, opts ...Option) *Backend {
	b := &Backend{db: db, timeout: DefaultQueryTimeout}
	b.setTable(DefaultTable)
	for _, o := range opts {
		o(b)
	}
	if db == nil {
		b.err = errors.New("pgsession: NewPostgresBackend: db is nil")
	}
	if b.timeout > 0 {
		b.watch = newWatch(b.timeout)
	}
	return b
}

func (b *Backend) setTable(name string) {
	parts := strings.Split(name, ".")
	bad := len(parts) > 2 || !utf8.ValidString(name) || strings.ContainsRune(name, 0)
	for _, p := range parts {
		bad = bad || p == "" || len(p) > maxTableName
	}
	if bad {
		b.err = fmt.Errorf("pgsession: invalid table name %q: want \"table\" or \"schema.table\", each part 1 to %d bytes", name, maxTableName)
		return
	}
	b.base, b.schema = parts[len(parts)-1], ""
	b.table = pq.QuoteIdentifier(b.base)
	if len(parts) == 2 {
		b.schema = parts[0]
		b.table = pq.QuoteIdentifier(b.schema) + "." + b.table
	}
}

// withTimeout returns ctx bounded by the query timeout (see watch), and the
// context to stop when the call has returned: nil without a timeout, which
// stops as well.
func (b *Backend) withTimeout(ctx context.Context) (context.Context, *stmtContext) {
	if b.watch == nil {
		return ctx, nil
	}
	c := b.watch.start(ctx)
	return c, c
}

// Close closes the statements prepared by WithDriverPreparedStatements, and
// returns their first error; a later call prepares them again (a call in
// flight during Close may fail). Otherwise
// it releases nothing and returns nil: the backend holds no connection of
// its own (statements prepared by WithPreparedStatements belong to the
// server connections and end with them). It does not close the database.
func (b *Backend) Close() error {
	var first error
	b.stmts.Range(func(query, v any) bool {
		if st, ok := v.(*sql.Stmt); ok {
			b.stmts.Delete(query)
			if err := st.Close(); first == nil {
				first = err
			}
		}
		return true
	})
	return first
}
