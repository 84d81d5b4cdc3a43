package pgstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// exec runs query with args and returns the rows it affected.
func (b *Backend) exec(ctx context.Context, query string, args ...any) (int64, error) {
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
// see prepared.go); or with the values as parameters (pgx otherwise, in
// its exec mode: an unnamed statement, one round trip).
//
// The whole call is bounded by the query timeout (see watch). If ctx ends before the
// statement has returned, the outcome is unknown and run returns an error
// wrapping ctx.Err(), even if the driver reported success. A connection
// found dead (driver.ErrBadConn) is retried, at most three attempts in all,
// as database/sql does: inserts and rotations are safe to repeat (see
// OpInsert), and every other statement is idempotent. Errors say
// whether the deadline hit while waiting for a pool connection or while the
// statement ran.
func (b *Backend) run(ctx context.Context, query string, args []any, scan func(*sql.Rows) error) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	ctx, bound := b.withTimeout(ctx)
	defer bound.stop()
	p, err := b.stack(ctx)
	if p == nil {
		return 0, fmt.Errorf("pgsession: %w", err)
	}
	// A plan's refusal is Migrate's and Check's to report: requests run.
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
		text = b.render(query)
	}
	if err != nil {
		return 0, b.explain(err)
	}
	if p.mode == modeExecute {
		args = nil // inlined into the EXECUTE
	} else {
		args = p.withMode(parameters(args)...) // pgx's exec mode first, if any: see driverstack.go
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
func (b *Backend) attempt(ctx context.Context, st *sql.Stmt, text string, args []any, scan func(*sql.Rows) error) (int64, error) {
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

// explain adds advice to a database error: one from a missing session
// table (or schema) wraps ErrNoTable, one from a table of another shape
// wraps ErrSchemaMismatch, and one from a prepared statement missing or
// duplicated on the server connection (a transaction pooler in front of a
// driver that prepares statements) names the driver setting to change.
// Other errors, and nil, are returned unchanged.
func (b *Backend) explain(err error) error {
	if err == nil {
		return nil
	}
	state := sqlState(err)
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
