package pgsession

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// schemaSQL is schema.sql, written for DefaultTable.
//
//go:embed schema.sql
var schemaSQL string

// DefaultTable is the table PostgresBackend uses unless WithTable says
// otherwise.
const DefaultTable = "sessions"

// DefaultQueryTimeout bounds each database call of a PostgresBackend unless
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

// PostgresBackend stores sessions in a PostgreSQL table. It works with any
// database/sql PostgreSQL driver wrapped in *sqlx.DB (lib/pq, pgx's stdlib),
// also inside a tracing wrapper such as otelsql.
// Reads are one indexed SELECT by key hash; each write is one statement. It
// is safe for concurrent use.
type PostgresBackend struct {
	db      *sqlx.DB
	table   string // quoted, possibly schema-qualified
	base    string // unquoted table name without schema, for index names
	schema  string // unquoted schema, or "" for the search path
	timeout time.Duration
	err     error         // a bad option, reported by every call
	mode    statementMode // the option given; plan is what it resolved to
	plan    atomic.Pointer[plan]
	probeMu sync.Mutex // one probe of the driver stack at a time
	stmts   sync.Map   // query template -> *preparedStatement or *sql.Stmt, see prepared.go

	distributed atomic.Int32 // distributedUnknown, distributedNo or distributedYes (Citus)
}

// PostgresOption configures a PostgresBackend.
type PostgresOption func(*PostgresBackend)

// WithTable stores sessions in the named table, optionally schema-qualified
// ("app.sessions"). Names are quoted, so any characters are safe; an empty
// name, more than one dot, or a table name longer than 40 bytes is an error
// reported by Migrate and every other call.
func WithTable(name string) PostgresOption {
	return func(b *PostgresBackend) { b.setTable(name) }
}

// WithQueryTimeout bounds each database call (load, save, cleanup) so a stuck
// database fails requests instead of hanging them. Zero means
// DefaultQueryTimeout; negative means no bound beyond the request's context.
func WithQueryTimeout(d time.Duration) PostgresOption {
	return func(b *PostgresBackend) { b.timeout = orDefault(d, DefaultQueryTimeout) }
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
func WithPreparedStatements() PostgresOption {
	return func(b *PostgresBackend) { b.mode = modeExecute }
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
func WithDriverPreparedStatements() PostgresOption {
	return func(b *PostgresBackend) { b.mode = modeDriver }
}

// NewPostgresBackend returns a backend that stores sessions in db. Call
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
func NewPostgresBackend(db *sqlx.DB, opts ...PostgresOption) *PostgresBackend {
	b := &PostgresBackend{db: db, timeout: DefaultQueryTimeout}
	b.setTable(DefaultTable)
	for _, o := range opts {
		o(b)
	}
	if db == nil {
		b.err = errors.New("pgsession: NewPostgresBackend: db is nil")
	}
	return b
}

func (b *PostgresBackend) setTable(name string) {
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

// The statements, with {t} standing for the quoted table. The columns of a
// session's own lifetime (idle_timeout_ms, absolute_timeout_ms, persistent)
// are NULL together when it follows Config; a timeout of -1 is none.
//
// Every statement on one session names its row by both key_hash and
// session_id ($1 and the last argument), the primary key: on a table
// distributed by session_id (Citus) each then runs on one shard. Only a
// token of the old form (key alone) loads by key_hash alone (sqlLoadByKey):
// on Citus that asks every shard, on PostgreSQL it uses the primary key's
// first column; the session's first write names the row by both.
const (
	sqlLoad = `SELECT data, created_at, accessed_at, session_id, idle_timeout_ms, absolute_timeout_ms, persistent
		FROM {t} WHERE key_hash = $1 AND session_id = $2`
	sqlLoadByKey = `SELECT data, created_at, accessed_at, session_id, idle_timeout_ms, absolute_timeout_ms, persistent
		FROM {t} WHERE key_hash = $1`
	// A row already under the new key can only be this insert's own
	// earlier attempt (the key is 256 random bits), whose answer was lost:
	// the repeat then does nothing. No conflict target: the primary key is
	// (key_hash, session_id), or key_hash alone on a table created before
	// 0.2 (Migrate keeps it; see schema.sql), and either is this row's.
	sqlInsert = `INSERT INTO {t} (key_hash, data, created_at, accessed_at, principal, session_id,
			idle_timeout_ms, absolute_timeout_ms, persistent, expires_at, user_agent, client_addr)
		VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT DO NOTHING`
	// sqlInsert, dropping the expired row ($13, $14) it replaces. On Citus
	// the two rows may live on two shards: one distributed transaction.
	sqlInsertReplacing = `WITH dead AS (DELETE FROM {t} WHERE key_hash = $13 AND session_id = $14)
		` + sqlInsert
	// GREATEST ignores a NULL $n: the access time then stays as it is.
	sqlTouch = `UPDATE {t} SET accessed_at = GREATEST(accessed_at, $2), expires_at = GREATEST(expires_at, $3)
		WHERE key_hash = $1 AND session_id = $4`
	// The common write: keys set ($2) and deleted ($3) in the data, nothing
	// else but the access time and expiry moving forward (as in sqlTouch).
	sqlPatch = `UPDATE {t} SET data = (data || $2::jsonb) - COALESCE($3::text[], '{}'),
		accessed_at = GREATEST(accessed_at, $4), expires_at = GREATEST(expires_at, $5) WHERE key_hash = $1 AND session_id = $6`
	// Every other write. $8 says the lifetime columns become $9-$11 and expires_at $12;
	// otherwise expires_at only moves forward.
	sqlUpdate = `UPDATE {t} SET data = CASE WHEN $2 THEN $3::jsonb ELSE (data || $3::jsonb) - COALESCE($4::text[], '{}') END,
		accessed_at = GREATEST(accessed_at, $5), principal = CASE WHEN $6 THEN $7 ELSE principal END,
		idle_timeout_ms = CASE WHEN $8 THEN $9 ELSE idle_timeout_ms END,
		absolute_timeout_ms = CASE WHEN $8 THEN $10 ELSE absolute_timeout_ms END,
		persistent = CASE WHEN $8 THEN $11 ELSE persistent END,
		expires_at = CASE WHEN $8 THEN $12 ELSE GREATEST(expires_at, $12) END
		WHERE key_hash = $1 AND session_id = $13`
	// A rotation moves the row to its new key in place rather than deleting
	// it and inserting a copy: a concurrent DeleteByPrincipal that waits on
	// the row's lock then re-checks the updated row and deletes it too, where
	// it would not see a freshly inserted one (READ COMMITTED), and of
	// concurrent rotations of one key exactly one finds the old key. The
	// session_id stays, and so does the row's shard on Citus (which refuses
	// to change a distribution column).
	sqlRotate = `UPDATE {t} SET key_hash = $2,
		data = CASE WHEN $3 THEN $4::jsonb ELSE (data || $4::jsonb) - COALESCE($5::text[], '{}') END,
		created_at = $6, accessed_at = $7, principal = CASE WHEN $8 THEN $9 ELSE principal END,
		idle_timeout_ms = CASE WHEN $10 THEN $11 ELSE idle_timeout_ms END,
		absolute_timeout_ms = CASE WHEN $10 THEN $12 ELSE absolute_timeout_ms END,
		persistent = CASE WHEN $10 THEN $13 ELSE persistent END,
		expires_at = $14,
		user_agent = CASE WHEN $15 THEN $16 ELSE user_agent END, client_addr = CASE WHEN $15 THEN $17 ELSE client_addr END
		WHERE key_hash = $1 AND session_id = $18`
	sqlExists = `SELECT 1 FROM {t} WHERE key_hash = $1 AND session_id = $2`
	sqlDelete = `DELETE FROM {t} WHERE key_hash = $1 AND session_id = $2`
	// $2: only this session_id, $3: all but this one; NULL for no limit.
	sqlDeleteByPrincipal = `DELETE FROM {t} WHERE principal = $1
		AND ($2::bytea IS NULL OR session_id = $2) AND ($3::bytea IS NULL OR session_id <> $3)`
	sqlListByPrincipal = `SELECT key_hash, session_id, created_at, accessed_at, idle_timeout_ms, absolute_timeout_ms, persistent,
		user_agent, client_addr FROM {t} WHERE principal = $1 ORDER BY accessed_at DESC`
	// sqlExpired matches the rows past the cutoffs: accessed before $1 or
	// created before $2 (rows following Config), or expires_at before $4
	// (rows with a lifetime of their own).
	sqlExpired = `((idle_timeout_ms IS NULL AND (accessed_at < $1 OR created_at < $2)) OR expires_at < $4)`
	// = ANY(ARRAY(...)) rather than IN (...): the planner then deletes by
	// primary key instead of hash-joining against a scan of the whole table,
	// so a batch costs in proportion to its size, not the table's.
	sqlDeleteExpired = `DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
		SELECT key_hash FROM {t} WHERE ` + sqlExpired + ` LIMIT $3 FOR UPDATE SKIP LOCKED))`
	// sqlDeleteExpired under the cleanup lock of the table $5: a
	// transaction-scoped advisory lock whose first key is "pgsm" in ASCII,
	// taken without waiting and released when the statement ends. When it
	// is not granted, the gating condition stops the scan before any row.
	sqlDeleteExpiredExclusive = `WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(1886610285, hashtext($5)) AS ok),
		del AS (DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
			SELECT key_hash FROM {t} WHERE (SELECT ok FROM lock) AND ` + sqlExpired + ` LIMIT $3 FOR UPDATE SKIP LOCKED)) RETURNING 1)
		SELECT (SELECT ok FROM lock), (SELECT count(*) FROM del)`
	// The cleanup of a table distributed by Citus, which refuses FOR UPDATE
	// across shards. Citus runs the inner SELECT first (each shard stops at
	// $3 rows, the coordinator keeps $3 of them), then the DELETE on every
	// shard, by primary key (its first column) for those $3 key hashes. With
	// no row lock between the two, the DELETE checks the cutoffs again: a
	// row a request touched meanwhile stays (READ COMMITTED re-checks a row
	// it waited for). A row locked by a request is waited for, not skipped.
	sqlDeleteExpiredDistributed = `DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
		SELECT key_hash FROM {t} WHERE ` + sqlExpired + ` LIMIT $3)) AND ` + sqlExpired
	// sqlDeleteExpiredDistributed under the cleanup lock, as
	// sqlDeleteExpiredExclusive. Citus takes the lock on the node the
	// statement was sent to, before it runs the DELETE.
	sqlDeleteExpiredDistributedExclusive = `WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(1886610285, hashtext($5)) AS ok),
		del AS (DELETE FROM {t} WHERE key_hash = ANY(ARRAY(
			SELECT key_hash FROM {t} WHERE (SELECT ok FROM lock) AND ` + sqlExpired + ` LIMIT $3)) AND ` + sqlExpired + ` RETURNING 1)
		SELECT (SELECT ok FROM lock), (SELECT count(*) FROM del)`
)

func (b *PostgresBackend) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.timeout > 0 {
		return context.WithTimeout(ctx, b.timeout)
	}
	return ctx, func() {}
}

// Close closes the statements prepared by WithDriverPreparedStatements, and
// returns their first error; a later call prepares them again (a call in
// flight during Close may fail). Otherwise
// it releases nothing and returns nil: the backend holds no connection of
// its own (statements prepared by WithPreparedStatements belong to the
// server connections and end with them). It does not close the database.
func (b *PostgresBackend) Close() error {
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

// exec runs query with args and returns the rows it affected.
func (b *PostgresBackend) exec(ctx context.Context, query string, args ...any) (int64, error) {
	return b.run(ctx, query, args, nil)
}

// run executes one statement of the backend: query, with {t} standing for
// the table and $n for args[n-1], on a pool connection of b.db. With a nil
// scan it returns the rows the statement affected; otherwise it hands the
// result rows to scan and returns 0.
//
// How the statement is sent is the backend's plan (driverstack.go), chosen
// once from the options and what the connection proved about itself: as
// the driver's prepared statement (a proven direct connection, or
// WithDriverPreparedStatements); as an EXECUTE of a statement named by its
// own hash, the values rendered into the text as literals, which the
// driver sends in one Query message (lib/pq and unknown drivers otherwise:
// one round trip, and nothing a transaction pooler can split or confuse;
// see prepared.go); or with the values as parameters (pgx, which prepares
// statements under names derived from their text).
//
// The whole call is bounded by the query timeout. If ctx ends before the
// statement has returned, the outcome is unknown and run returns an error
// wrapping ctx.Err(), even if the driver reported success. A connection
// found dead (driver.ErrBadConn) is retried, at most three attempts in all,
// as database/sql does: inserts and rotations are safe to repeat (see
// OpInsert), and every other statement is idempotent. Errors say
// whether the deadline hit while waiting for a pool connection or while the
// statement ran.
func (b *PostgresBackend) run(ctx context.Context, query string, args []any, scan func(*sql.Rows) error) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	p, err := b.stack(ctx)
	if err != nil {
		return 0, err
	}
	var (
		ps   *preparedStatement
		st   *sql.Stmt
		text string
	)
	switch {
	case p.mode == modeDriver:
		start := time.Now()
		if st, err = b.driverStatement(ctx, query); err != nil && err == ctx.Err() { //nolint:errorlint // identity: the bare context error
			err = notSent(ctx, start, err) // preparing waited for a pool connection
		}
	case p.mode == modeExecute:
		ps = b.prepared(query)
		text, err = b.execute(ps, args)
	default:
		text, err = b.render(query, args, p.inline)
	}
	if err != nil {
		return 0, b.explain(err)
	}
	if p.inline {
		args = nil
	} else {
		args = parameters(args)
	}
	// Like database/sql's own methods, retry on a connection found dead
	// (driver.ErrBadConn): every statement of the backend is safe to repeat.
	// A prepared statement missing on the server connection is prepared in
	// the same message as its EXECUTE; see prepared.go.
	for attempt, misses := 1, 0; ; {
		n, err := b.attempt(ctx, st, text, args, scan)
		if ps != nil && err != nil && ctx.Err() == nil && misses < maxPrepareMisses {
			if next, ok := ps.retry(text, err); ok {
				text, misses = next, misses+1
				continue
			}
		}
		if !errors.Is(err, driver.ErrBadConn) || attempt == 3 || ctx.Err() != nil {
			return n, b.explain(err)
		}
		attempt++
	}
}

// parameters returns args as the driver takes them: a text[] ([]string)
// through pq.Array, which pgx accepts too. args is changed in place.
func parameters(args []any) []any {
	for i, a := range args {
		if keys, ok := a.([]string); ok {
			args[i] = pq.Array(keys)
		}
	}
	return args
}

// attempt is one try of run. It leaves the choice of a pool connection to
// database/sql (a plain db.QueryContext: no *sql.Conn to take and release),
// so the phase a deadline hit is told by the error: database/sql returns
// the context's own error, unwrapped, when it ended before a connection was
// handed to the driver; once the statement is sent, lib/pq cancels it on
// the server and reports that (SQLSTATE 57014) or a later error.
//
// With a non-nil st, the statement run is st (text is its text).
func (b *PostgresBackend) attempt(ctx context.Context, st *sql.Stmt, text string, args []any, scan func(*sql.Rows) error) (int64, error) {
	start := time.Now()
	var (
		n    int64
		err  error
		sent = true // false when database/sql never reached the driver
	)
	if scan == nil {
		var res sql.Result
		if st != nil {
			res, err = st.ExecContext(ctx, args...)
		} else {
			res, err = b.db.ExecContext(ctx, text, args...)
		}
		if err == nil {
			n, err = res.RowsAffected()
		} else {
			sent = err != ctx.Err() //nolint:errorlint // identity: the bare context error
		}
	} else {
		var rows *sql.Rows
		if st != nil {
			rows, err = st.QueryContext(ctx, args...)
		} else {
			rows, err = b.db.QueryContext(ctx, text, args...)
		}
		if err == nil {
			err = scan(rows)
			if cerr := rows.Close(); err == nil {
				err = cerr
			}
		} else {
			sent = err != ctx.Err() //nolint:errorlint // identity: the bare context error
		}
	}
	if ctx.Err() == nil {
		return n, err
	}
	if !sent {
		return 0, notSent(ctx, start, err)
	}
	// lib/pq may report success for a statement it cancelled (one that
	// committed locally and waited for a synchronous standby): the outcome
	// is unknown, so it is never reported as done.
	return 0, fmt.Errorf("pgsession: statement did not complete in time (%v from asking for a pool connection), its outcome is unknown: %w",
		time.Since(start).Round(time.Millisecond), errors.Join(ctx.Err(), err))
}

// notSent is the error of a call whose ctx ended while it waited for a
// pool connection (err is what database/sql returned): nothing was sent.
func notSent(ctx context.Context, start time.Time, err error) error {
	return fmt.Errorf("pgsession: no pool connection after waiting %v, the statement was not sent (raise db.SetMaxOpenConns or WithQueryTimeout, or check that the database is reachable): %w",
		time.Since(start).Round(time.Millisecond), errors.Join(ctx.Err(), err))
}

// render returns query with {t} replaced by the table and, when inline,
// each $n by args[n-1] as a literal. The template is scanned once, so a
// table name or a value that itself contains "$1" or "{t}" is never
// substituted again. (The templates hold no other "$" or "{t}".)
func (b *PostgresBackend) render(query string, args []any, inline bool) (string, error) {
	var out strings.Builder
	out.Grow(len(query) + len(b.table) + 80*len(args))
	if err := b.expand(&out, query, args, inline); err != nil {
		return "", err
	}
	return out.String(), nil
}

// expand writes query to out with {t} replaced by the table and, when
// inline, each $n by args[n-1] as a literal.
func (b *PostgresBackend) expand(out *strings.Builder, query string, args []any, inline bool) error {
	for i := 0; i < len(query); {
		switch {
		case strings.HasPrefix(query[i:], "{t}"):
			out.WriteString(b.table)
			i += len("{t}")
		case inline && query[i] == '$':
			j := i + 1
			for j < len(query) && '0' <= query[j] && query[j] <= '9' {
				j++
			}
			n, err := strconv.Atoi(query[i+1 : j])
			if err != nil || n < 1 || n > len(args) {
				return fmt.Errorf("pgsession: statement wants %s, has %d arguments", query[i:j], len(args))
			}
			if err := writeLiteral(out, args[n-1]); err != nil {
				return err
			}
			i = j
		default:
			out.WriteByte(query[i])
			i++
		}
	}
	return nil
}

// writeLiteral writes v to out as a PostgreSQL literal: NULL, a boolean,
// an integer, bytea as hex, a string or timestamp as an escape string
// E'...', or a text[] array.
func writeLiteral(out *strings.Builder, v any) error {
	switch v := v.(type) {
	case nil:
		out.WriteString("NULL")
	case bool:
		out.WriteString(strings.ToUpper(strconv.FormatBool(v)))
	case int:
		out.WriteString(strconv.Itoa(v))
	case int64:
		out.WriteString(strconv.FormatInt(v, 10))
	case []byte:
		if v == nil {
			out.WriteString("NULL")
			break
		}
		out.WriteString(`E'\\x`)
		var buf [64]byte
		for len(v) > 0 {
			k := min(len(v), len(buf)/2)
			hex.Encode(buf[:], v[:k])
			out.Write(buf[:2*k])
			v = v[k:]
		}
		out.WriteString(`'::bytea`)
	case string:
		return writeString(out, v)
	case time.Time:
		return writeString(out, string(pq.FormatTimestamp(v)))
	case []string:
		if v == nil {
			out.WriteString("NULL")
			break
		}
		out.WriteString("ARRAY[")
		for i, e := range v {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := writeString(out, e); err != nil {
				return err
			}
		}
		out.WriteString("]::text[]")
	default:
		return fmt.Errorf("pgsession: cannot write %T as a literal", v)
	}
	return nil
}

// quoteString returns s as an escape string literal E'...'.
func quoteString(s string) (string, error) {
	var out strings.Builder
	err := writeString(&out, s)
	return out.String(), err
}

// writeString writes s to out as an escape string literal E'...'.
func writeString(out *strings.Builder, s string) error {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("pgsession: string %q is not valid UTF-8 text without NUL", s)
	}
	out.WriteString("E'")
	_, _ = escaper.WriteString(out, s)
	out.WriteByte('\'')
	return nil
}

// escaper doubles backslashes and single quotes, for E'...'.
var escaper = strings.NewReplacer(`\`, `\\`, `'`, `''`)

// Load implements Backend: one SELECT by primary key (by its first column
// for a zero sid).
func (b *PostgresBackend) Load(ctx context.Context, id ID, sid SessionID) (*Record, error) {
	l := &loadedRow{rec: Record{ID: id, SessionID: sid}}
	l.args[0], l.args[1] = l.rec.ID[:], l.rec.SessionID[:]
	query, args := sqlLoad, l.args[:]
	if sid == (SessionID{}) {
		query, args = sqlLoadByKey, l.args[:1]
	}
	if _, err := b.run(ctx, query, args, l.scan); err != nil {
		return nil, err
	}
	if !l.found {
		return nil, ErrNotFound
	}
	if l.decodeErr != nil {
		return nil, fmt.Errorf("pgsession: session %s: stored data is not a JSON object: %w", id, l.decodeErr)
	}
	l.rec.Lifetime = l.lt.lifetime()
	return &l.rec, nil
}

// loadedRow is what Load reads, in one allocation: the record and the
// scan's destinations.
type loadedRow struct {
	rec       Record
	args      [2]any
	data, sid sql.RawBytes // valid until the rows move on: decoded in scan
	lt        storedLifetime
	found     bool
	decodeErr error
}

// scan reads the row, if any, and decodes its data.
func (l *loadedRow) scan(rows *sql.Rows) error {
	if !rows.Next() {
		return rows.Err()
	}
	if err := rows.Scan(&l.data, &l.rec.Created, &l.rec.Accessed, &l.sid, &l.lt.idle, &l.lt.absolute, &l.lt.persistent); err != nil {
		return err
	}
	l.found = true
	copy(l.rec.SessionID[:], l.sid)
	l.rec.Data, l.decodeErr = decodeData(l.data)
	return nil
}

// Apply implements Backend: one statement per action. An insert or rotation
// repeated after its first attempt committed (its answer lost) succeeds
// without writing again; a rotation that finds its old row gone costs a
// second statement to check for that.
func (b *PostgresBackend) Apply(ctx context.Context, a Action) error {
	var (
		n   int64
		err error
	)
	switch a.Op {
	case OpNone:
		return nil
	case OpInsert:
		idle, absolute, persistent := lifetimeArgs(a.Lifetime)
		ua, addr := deviceArgs(a.Device)
		query, args := sqlInsert, []any{a.New[:], jsonObject(a.Patch.Set), a.Created, a.Accessed, nullString(a.Principal),
			a.SessionID[:], idle, absolute, persistent, nullTime(a.Expires), ua, addr}
		if a.Old != (ID{}) {
			query, args = sqlInsertReplacing, append(args, a.Old[:], a.OldSessionID[:])
		}
		_, err = b.exec(ctx, query, args...)
		n = 1
	case OpUpdate:
		switch {
		case a.Patch.IsEmpty() && a.Lifetime == nil:
			n, err = b.exec(ctx, sqlTouch, a.Old[:], nullTime(a.Accessed), nullTime(a.Expires), a.OldSessionID[:])
		case !a.Patch.Replace && !a.SetPrincipal && a.Lifetime == nil:
			n, err = b.exec(ctx, sqlPatch, a.Old[:], jsonObject(a.Patch.Set), array(a.Patch.Delete), nullTime(a.Accessed), nullTime(a.Expires),
				a.OldSessionID[:])
		default:
			idle, absolute, persistent := lifetimeArgs(a.Lifetime)
			n, err = b.exec(ctx, sqlUpdate, a.Old[:], a.Patch.Replace, jsonObject(a.Patch.Set), array(a.Patch.Delete), nullTime(a.Accessed),
				a.SetPrincipal, nullString(a.Principal), a.Lifetime != nil, idle, absolute, persistent, nullTime(a.Expires), a.OldSessionID[:])
		}
	case OpRotate:
		idle, absolute, persistent := lifetimeArgs(a.Lifetime)
		ua, addr := deviceArgs(a.Device)
		n, err = b.exec(ctx, sqlRotate, a.Old[:], a.New[:], a.Patch.Replace, jsonObject(a.Patch.Set), array(a.Patch.Delete),
			a.Created, a.Accessed, a.SetPrincipal, nullString(a.Principal), a.Lifetime != nil, idle, absolute, persistent,
			nullTime(a.Expires), a.Device != nil, ua, addr, a.OldSessionID[:])
		if err == nil && n == 0 {
			// The old row is gone: by a concurrent logout or rotation, or
			// by this very rotation, repeated after its answer was lost.
			_, err = b.run(ctx, sqlExists, []any{a.New[:], a.OldSessionID[:]}, func(rows *sql.Rows) error {
				if rows.Next() {
					n = 1
				}
				return rows.Err()
			})
		}
	case OpDelete:
		_, err = b.exec(ctx, sqlDelete, a.Old[:], a.OldSessionID[:])
		n = 1
	default:
		return fmt.Errorf("pgsession: unknown operation %d", a.Op)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrGone
	}
	return nil
}

// DeleteExpired implements Backend, removing at most limit rows in one
// statement. Rows locked by a concurrent request are skipped (on a table
// distributed by Citus, waited for).
func (b *PostgresBackend) DeleteExpired(ctx context.Context, c Cutoffs, limit int) (int, error) {
	args := []any{nullTime(c.IdleBefore), nullTime(c.CreatedBefore), limit, nullTime(c.Now)}
	var n int64
	err := b.cleanup(ctx, func(distributed bool) (err error) {
		query := sqlDeleteExpired
		if distributed {
			query = sqlDeleteExpiredDistributed
		}
		n, err = b.exec(ctx, query, args...)
		return err
	})
	return int(n), err
}

// DeleteExpiredExclusive implements ExclusiveCleaner: DeleteExpired and
// the cleanup lock, a transaction-scoped advisory lock keyed by the table,
// in one statement. No connection or lock outlives the call, so it is safe
// behind any connection pooler.
func (b *PostgresBackend) DeleteExpiredExclusive(ctx context.Context, c Cutoffs, limit int) (n int, ok bool, err error) {
	args := []any{nullTime(c.IdleBefore), nullTime(c.CreatedBefore), limit, nullTime(c.Now), b.table}
	err = b.cleanup(ctx, func(distributed bool) error {
		query := sqlDeleteExpiredExclusive
		if distributed {
			query = sqlDeleteExpiredDistributedExclusive
		}
		_, err := b.run(ctx, query, args, func(rows *sql.Rows) error {
			if !rows.Next() {
				return errors.Join(rows.Err(), errors.New("pgsession: cleanup returned no row"))
			}
			return rows.Scan(&ok, &n)
		})
		return err
	})
	if err != nil {
		return 0, false, err
	}
	return n, ok, nil
}

// Whether the table is distributed by Citus, as b.distributed holds it.
const (
	distributedUnknown int32 = iota
	distributedNo
	distributedYes
)

// cleanup runs one cleanup statement with do, which is told whether the
// table is distributed by Citus. That is looked up on first use (and set by
// Distribute); if the plain statement is refused as Citus refuses FOR
// UPDATE across shards (the table was distributed since), it is looked up
// again and the statement retried once.
func (b *PostgresBackend) cleanup(ctx context.Context, do func(distributed bool) error) error {
	for attempt := 0; ; attempt++ {
		state := b.distributed.Load()
		if state == distributedUnknown {
			dist, err := b.isDistributed(ctx)
			if err != nil {
				return err
			}
			state = distributedNo
			if dist {
				state = distributedYes
			}
			b.distributed.Store(state)
		}
		err := do(state == distributedYes)
		var e interface{ SQLState() string }
		if err == nil || attempt > 0 || state != distributedNo || !errors.As(err, &e) || e.SQLState() != "0A000" {
			return err
		}
		b.distributed.Store(distributedUnknown) // feature_not_supported: look again
	}
}

// isDistributed reports whether the table is a Citus distributed table.
// Without the citus extension it costs one catalog query.
func (b *PostgresBackend) isDistributed(ctx context.Context) (bool, error) {
	if b.err != nil {
		return false, b.err
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	table, err := quoteString(b.table)
	if err != nil {
		return false, err
	}
	var dist bool
	err = b.db.QueryRowContext(ctx, `SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL`).Scan(&dist)
	if err == nil && dist {
		err = b.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
			WHERE logicalrelid = to_regclass(`+table+`) AND partmethod = 'h')`).Scan(&dist)
	}
	if err != nil {
		return false, b.explain(fmt.Errorf("pgsession: is %s distributed (Citus): %w", b.table, err))
	}
	return dist, nil
}

// Distribute makes the session table a distributed table of Citus, sharded
// by session_id, for a site whose session traffic outgrows one PostgreSQL
// server (see the README's "Scaling out on Citus"): every statement on one
// session then runs on one shard. It migrates the table first (see
// Migrate), and it is idempotent and safe to call from several instances at
// once, like Migrate. Rows already in the table move into the shards.
//
// Call it through the Citus coordinator. Without the citus extension in the
// database it returns an error and changes nothing beyond Migrate's; so it
// does for a table Citus already distributes by another column, or holds as
// a reference or local table (alter_distributed_table or
// undistribute_table change those).
func (b *PostgresBackend) Distribute(ctx context.Context) error {
	if err := b.Migrate(ctx); err != nil {
		return err
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("pgsession: distribute: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
		return fmt.Errorf("pgsession: distribute: lock: %w", err)
	}
	var citus bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`).Scan(&citus); err != nil {
		return fmt.Errorf("pgsession: distribute: %w", err)
	}
	if !citus {
		return fmt.Errorf("pgsession: distribute %s: the citus extension is not installed in this database (CREATE EXTENSION citus, on the coordinator)", b.table)
	}
	var method, column sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT partmethod::text, column_to_column_name(logicalrelid, partkey)
		FROM pg_dist_partition WHERE logicalrelid = to_regclass($1)`, b.table).Scan(&method, &column)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Citus wants every unique constraint to hold the distribution
		// column: a table that kept its primary key (key_hash) through
		// Migrate gets (key_hash, session_id) first.
		current, err := b.checkTable(ctx, tx)
		if err != nil {
			return fmt.Errorf("pgsession: distribute: %w", err)
		}
		if !current.primaryKey {
			if _, err := tx.ExecContext(ctx, b.upgradePrimaryKey(current.pkName)); err != nil {
				return fmt.Errorf("pgsession: distribute %s: primary key: %w", b.table, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `SELECT create_distributed_table($1, 'session_id')`, b.table); err != nil {
			return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
		}
		// The rows were copied into the shards; drop the coordinator's own.
		if _, err := tx.ExecContext(ctx, `SELECT truncate_local_data_after_distributing_table($1)`, b.table); err != nil {
			return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
		}
	case err != nil:
		return fmt.Errorf("pgsession: distribute %s: %w", b.table, err)
	case method.String != "h" || column.String != "session_id":
		return fmt.Errorf("pgsession: distribute %s: Citus already holds it (method %q, column %q), want it distributed by session_id: "+
			"SELECT alter_distributed_table('%s', distribution_column := 'session_id') for a distributed table",
			b.table, method.String, column.String, b.table)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("pgsession: distribute: commit: %w", err)
	}
	b.distributed.Store(distributedYes)
	return nil
}

// DeleteByPrincipal implements PrincipalBackend.
func (b *PostgresBackend) DeleteByPrincipal(ctx context.Context, principal string, only, except SessionID) (int, error) {
	n, err := b.exec(ctx, sqlDeleteByPrincipal, principal, nullSessionID(only), nullSessionID(except))
	return int(n), err
}

// ListByPrincipal implements PrincipalBackend.
func (b *PostgresBackend) ListByPrincipal(ctx context.Context, principal string) ([]Record, error) {
	var out []Record
	_, err := b.run(ctx, sqlListByPrincipal, []any{principal}, func(rows *sql.Rows) error {
		for rows.Next() {
			var r Record
			var id, sid []byte
			var lt storedLifetime
			var ua, addr sql.NullString
			if err := rows.Scan(&id, &sid, &r.Created, &r.Accessed, &lt.idle, &lt.absolute, &lt.persistent, &ua, &addr); err != nil {
				return err
			}
			copy(r.ID[:], id)
			copy(r.SessionID[:], sid)
			r.Lifetime, r.Device = lt.lifetime(), Device{UserAgent: ua.String, Addr: addr.String}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// array passes keys as a text[] argument (NULL when empty): a []string
// that render quotes, or that run passes through pq.Array as a parameter.
func array(keys []string) any {
	if len(keys) == 0 {
		return nil // NULL, without a value to box
	}
	return keys
}

// storedLifetime is the lifetime columns of a row.
type storedLifetime struct {
	idle, absolute sql.NullInt64 // milliseconds, -1 for none
	persistent     sql.NullBool
}

// lifetime returns the row's own Lifetime, or nil if it follows Config.
func (l storedLifetime) lifetime() *Lifetime {
	if !l.idle.Valid {
		return nil
	}
	d := func(ms sql.NullInt64) time.Duration {
		if ms.Int64 < 0 {
			return -1
		}
		return time.Duration(ms.Int64) * time.Millisecond
	}
	return &Lifetime{IdleTimeout: d(l.idle), AbsoluteTimeout: d(l.absolute), Persistent: l.persistent.Bool}
}

// lifetimeArgs returns l as the lifetime columns' values (NULLs for nil).
func lifetimeArgs(l *Lifetime) (idle, absolute, persistent any) {
	if l == nil {
		return nil, nil, nil
	}
	ms := func(d time.Duration) int64 {
		if d < 0 {
			return -1
		}
		return max(d.Milliseconds(), 1)
	}
	return ms(l.IdleTimeout), ms(l.AbsoluteTimeout), l.Persistent
}

// deviceArgs returns d as the device columns' values (NULLs for nil).
func deviceArgs(d *Device) (userAgent, addr any) {
	if d == nil {
		return nil, nil
	}
	return nullString(d.UserAgent), nullString(d.Addr)
}

func nullSessionID(id SessionID) any {
	if id == (SessionID{}) {
		return nil
	}
	return id[:]
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// jsonObject encodes set as a JSON object text. Values are valid JSON (they
// come from json.Marshal), so this cannot fail.
func jsonObject(set map[string]json.RawMessage) string {
	if len(set) == 0 {
		return "{}"
	}
	b, err := json.Marshal(set)
	if err != nil {
		return "{}" // unreachable: every value was produced by json.Marshal
	}
	return string(b)
}

// migrateLock is the advisory lock key that serialises Migrate across
// instances ("pgsessio" in ASCII).
const migrateLock = 0x7067736573736970

// schemaName matches the table, index and constraint names in schema.sql.
var schemaName = regexp.MustCompile(`\bsessions(_[a-z_]+_idx|_pkey)?\b`)

// Schema returns the SQL that Migrate applies (schema.sql with this backend's
// table name), for users who run migrations with their own tool.
func (b *PostgresBackend) Schema() string {
	var out strings.Builder
	for line := range strings.Lines(schemaSQL) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			line = schemaName.ReplaceAllStringFunc(line, b.quoteSchemaName)
		}
		out.WriteString(line)
	}
	return out.String()
}

// quoteSchemaName maps a table or index name of schema.sql to this backend's.
func (b *PostgresBackend) quoteSchemaName(name string) string {
	if suffix, _ := strings.CutPrefix(name, DefaultTable); suffix != "" {
		return pq.QuoteIdentifier(b.base + suffix)
	}
	return b.table
}

// upgradeColumns are the columns added since 0.1, which Migrate adds to an
// older table.
var upgradeColumns = map[string]string{
	"session_id":          "bytea NOT NULL",
	"idle_timeout_ms":     "bigint",
	"absolute_timeout_ms": "bigint",
	"persistent":          "boolean",
	"expires_at":          "timestamp with time zone",
	"user_agent":          "text",
	"client_addr":         "text",
}

// wantColumns is the shape Migrate requires of an existing table.
var wantColumns = map[string]string{
	"key_hash":    "bytea NOT NULL",
	"data":        "jsonb NOT NULL",
	"created_at":  "timestamp with time zone NOT NULL",
	"accessed_at": "timestamp with time zone NOT NULL",
	"principal":   "text",
}

// Migrate creates the table and its indexes if they are missing, and checks
// the shape of a table that already exists: a table of the same name that is
// not pgsession's (such as alexedwards/scs's "sessions") is reported as
// ErrSchemaMismatch and never used. It is idempotent and safe to call from
// several instances at once (it holds a PostgreSQL advisory lock).
func (b *PostgresBackend) Migrate(ctx context.Context) error {
	if b.err != nil {
		return b.err
	}
	// The driver stack is probed here, at startup, rather than at the
	// first request (see driverstack.go).
	if _, err := b.stack(ctx); err != nil {
		return fmt.Errorf("pgsession: migrate: %w", err)
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("pgsession: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
		return fmt.Errorf("pgsession: migrate: lock: %w", err)
	}
	current, err := b.checkTable(ctx, tx)
	if err != nil && !errors.Is(err, ErrNoTable) {
		return err
	}
	// Split schema.sql before the table name goes in: a quoted name may
	// itself contain a semicolon.
	for _, stmt := range splitSQL(schemaSQL) {
		if current.ok() && strings.HasPrefix(stmt, "ALTER TABLE") {
			continue // up to date: no ALTER TABLE, whose lock would stall requests
		}
		stmt = schemaName.ReplaceAllStringFunc(stmt, b.quoteSchemaName)
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("pgsession: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("pgsession: migrate: commit: %w", err)
	}
	return nil
}

// upgradePrimaryKey returns the statement that makes the table's primary
// key (key_hash, session_id), replacing the constraint named old (whatever
// its name; none if "").
func (b *PostgresBackend) upgradePrimaryKey(old string) string {
	stmt := "ALTER TABLE " + b.table + " "
	if old != "" {
		stmt += "DROP CONSTRAINT " + pq.QuoteIdentifier(old) + ", "
	}
	return stmt + "ADD CONSTRAINT " + pq.QuoteIdentifier(b.base+"_pkey") + " " + wantPrimaryKey
}

// tableState is what checkTable found.
type tableState struct {
	exists     bool   // the table exists with pgsession's columns
	columns    bool   // it has the columns added since 0.1 (upgradeColumns)
	primaryKey bool   // its primary key is (key_hash, session_id)
	pkName     string // the name of its primary key constraint, if any
}

// ok reports whether the table is up to date.
func (s tableState) ok() bool { return s.exists && s.columns }

// wantPrimaryKey is the primary key's definition since tokens carry the
// session ID (pg_get_constraintdef's form).
const wantPrimaryKey = "PRIMARY KEY (key_hash, session_id)"

// checkTable returns ErrSchemaMismatch if the table exists without
// pgsession's columns, and ErrNoTable if it does not exist. Otherwise it
// reports whether it is up to date: whether it has the columns added since
// 0.1 (upgradeColumns) and the primary key (key_hash, session_id).
func (b *PostgresBackend) checkTable(ctx context.Context, tx sqlx.QueryerContext) (state tableState, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, b.table)
	if err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	defer rows.Close()
	have := map[string]string{}
	var found []string
	for rows.Next() {
		var name, typ string
		var notNull bool
		if err := rows.Scan(&name, &typ, &notNull); err != nil {
			return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
		}
		if notNull {
			typ += " NOT NULL"
		}
		have[name] = typ
		found = append(found, name+" "+typ)
	}
	if err := rows.Err(); err != nil {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	if len(found) == 0 {
		return state, fmt.Errorf("%w: %s; %s", ErrNoTable, b.table, adviceMigrate)
	}
	for name, typ := range wantColumns {
		if have[name] != typ {
			return state, fmt.Errorf("%w: %s has columns (%s), want key_hash bytea, data jsonb, created_at and accessed_at timestamptz, all NOT NULL, and principal text; "+
				"if it belongs to another library (alexedwards/scs uses \"sessions\"), choose another name with WithTable",
				ErrSchemaMismatch, b.table, strings.Join(found, ", "))
		}
	}
	state.exists, state.columns = true, true
	for name, typ := range upgradeColumns {
		if have[name] != typ {
			state.columns = false
		}
	}
	var def string
	err = tx.QueryRowxContext(ctx, `SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = to_regclass($1) AND contype = 'p'`, b.table).Scan(&state.pkName, &def)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return state, fmt.Errorf("pgsession: inspect table %s: %w", b.table, err)
	}
	state.primaryKey = def == wantPrimaryKey
	return state, nil
}

// adviceMigrate tells what to do about a missing or foreign table.
const adviceMigrate = "call Migrate at startup, or apply Schema() with your migration tool"

// Check reports whether the session table exists with the columns pgsession
// needs, for applications that create it with their own migration tool
// instead of Migrate: ErrNoTable if it is missing, ErrSchemaMismatch if a
// table of that name has another shape, both with advice on what to do. It
// costs one catalog query and changes nothing. Call it at startup so a
// missing migration fails there rather than at the first request.
func (b *PostgresBackend) Check(ctx context.Context) error {
	if b.err != nil {
		return b.err
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	if _, err := b.stack(ctx); err != nil {
		return fmt.Errorf("pgsession: check table %s: %w", b.table, err)
	}
	// In a transaction, so that a pooler keeps the parameterised query on
	// one server connection whatever the driver does.
	tx, err := b.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return b.explain(fmt.Errorf("pgsession: check table %s: %w", b.table, err))
	}
	defer func() { _ = tx.Rollback() }()
	current, err := b.checkTable(ctx, tx)
	switch {
	case err != nil:
	case !current.columns:
		err = fmt.Errorf("%w: %s lacks the columns added since pgsession 0.1 (session_id, lifetime and device columns); %s",
			ErrSchemaMismatch, b.table, adviceMigrate)
	}
	return err
}

// explain adds advice to a database error: one from a missing session
// table (or schema) wraps ErrNoTable, one from a table of another shape
// wraps ErrSchemaMismatch, and one from a prepared statement missing or
// duplicated on the server connection (a transaction pooler in front of a
// driver that prepares statements) names the driver setting to change.
// Other errors, and nil, are returned unchanged.
func (b *PostgresBackend) explain(err error) error {
	if err == nil {
		return nil
	}
	var e interface{ SQLState() string } // *pq.Error and pgx's *pgconn.PgError
	state := ""
	if errors.As(err, &e) {
		state = e.SQLState()
	}
	switch {
	case state == "42P01", state == "3F000": // undefined_table, invalid_schema_name
		return fmt.Errorf("%w: %s (%s): %w", ErrNoTable, b.table, adviceMigrate, err)
	case state == "42703", state == "42804", state == "42883": // undefined_column, datatype_mismatch, undefined_function
		return fmt.Errorf("%w: %s is not pgsession's table (Check reports its columns; if another library owns it, "+
			"choose another name with WithTable, then call Migrate or apply Schema()): %w", ErrSchemaMismatch, b.table, err)
	case state == "26000", state == "42P05", // invalid_sql_statement_name, duplicate_prepared_statement
		strings.Contains(err.Error(), "prepared statement") && strings.Contains(err.Error(), "does not exist"):
		return fmt.Errorf("pgsession: the driver's prepared statement is missing or duplicated on the server connection, "+
			"as happens behind a transaction pooler (PgBouncer pool_mode=transaction): with pgx add default_query_exec_mode=exec "+
			"to the connection string, otherwise check the pooler's prepared-statement support: %w", err)
	}
	return err
}

// splitSQL splits a script into statements, dropping comments. schema.sql
// has no semicolons inside strings or comments.
func splitSQL(script string) []string {
	var lines []string
	for l := range strings.Lines(script) {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	var out []string
	for s := range strings.SplitSeq(strings.Join(lines, ""), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
