package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/lib/pq"
)

// How the backend learns its driver stack, and the statement mode it picks.
//
// Whether a statement mode is safe depends on what is beneath the *sql.DB,
// which the driver's Go type does not tell: tracing wrappers (otelsql,
// sqlhooks, APM agents) wrap driver.Driver and driver.Conn, so db.Driver()
// is the wrapper. The backend therefore asks the connection itself, once,
// on one pinned pool connection (probeStack):
//
//   - The driver beneath any wrapper is told by the type of an error it
//     returns: wrappers hand the driver's errors through unchanged. A
//     statement that fails on purpose yields *pq.Error from lib/pq and an
//     error of a jackc/pgx package from pgx.
//   - Whether the connection goes straight to PostgreSQL, with no pooler in
//     between, is proved one of two ways, for lib/pq and pgx alike:
//     over TCP, when the server's view of its client (address and port,
//     inet_client_addr and inet_client_port) and of itself is a TCP
//     connection that this very process holds (ownsTCPConn: Linux's
//     /proc/self); a pooler or proxy in between shows the server its own
//     socket, never ours. Over a Unix socket, when the probe's connection is
//     a Unix socket on our side too and every connected Unix stream socket
//     of this process has the server's postmaster as its peer
//     (unixPeersArePostmaster, below). Another system, another PID
//     namespace, or any doubt proves nothing.
//   - pgx's own statement cache (its default, default_query_exec_mode=
//     cache_statement) prepares named statements that a transaction pooler
//     cannot carry between server connections. Where the connection is not
//     proven direct, the backend sends each of its statements with pgx's
//     exec mode (a pgx.QueryExecMode as the first argument, which pgx's
//     stdlib hands to pgx: unnamed statements, one round trip), unless the
//     connection is configured with a mode that never prepares (exec,
//     simple_protocol). The value is of pgx's own type, found by reflection
//     on the driver connection (pgxInspect), so this package does not import
//     pgx; its String() is checked before use, and one round trip checks
//     that any wrapper hands it to pgx intact. Where that cannot be done,
//     Migrate and Check refuse, naming the fix (refusal): never a failure
//     per request.
//
// The choice (choosePlan) is one-sided: the driver's protocol-level prepared
// statements, the fastest mode, are used only on a proven direct
// connection, where no server connection is shared. Everywhere else lib/pq
// and unknown drivers get SQL PREPARE/EXECUTE under content-hashed names
// with the values inlined (prepared.go), which is correct behind any
// pooler; pgx gets parameters in its exec mode (unnamed statements), which
// is correct behind any pooler too. A wrong guess costs speed, never
// correctness.

// driverFamily is the database/sql driver beneath any wrappers.
type driverFamily uint8

const (
	familyUnknown driverFamily = iota
	familyPQ                   // github.com/lib/pq
	familyPGX                  // github.com/jackc/pgx (stdlib)
)

func (f driverFamily) String() string {
	switch f {
	case familyPQ:
		return "lib/pq"
	case familyPGX:
		return "pgx"
	}
	return "unknown driver"
}

// plan is how the backend sends its statements, chosen once from the
// options and what the connection proved about itself.
type plan struct {
	mode   statementMode // modeText, modeExecute (values inlined) or modeDriver, never modeAuto
	family driverFamily
	direct bool // proven: the connection goes straight to PostgreSQL

	// pgx in modeText: pgxMode, when non-nil, is a pgx.QueryExecMode that
	// run passes as each statement's first argument ("exec"); pgxDefault
	// is the connection's own default_query_exec_mode as pgx names it
	// ("cache statement", "exec", ...), or "" when it could not be read.
	pgxMode    any
	pgxDefault string
	// refusal, when non-nil, is returned by Migrate and Check (through
	// stack): pgx's statements cannot be made safe behind a pooler here.
	// Requests still run, with pgx's own default.
	refusal error
}

func (p *plan) String() string {
	var s string
	switch {
	case p.mode == modeDriver:
		s = "driver prepared statements"
	case p.mode == modeExecute:
		s = "SQL PREPARE/EXECUTE, values inlined"
	default:
		s = "plain statements, values as parameters"
		switch {
		case p.pgxMode != nil:
			s += ", in pgx's exec mode"
		case p.family == familyPGX && p.pgxDefault != "":
			s += ", in pgx's default_query_exec_mode (" + p.pgxDefault + ")"
		case p.family == familyPGX:
			s += ", in pgx's default_query_exec_mode"
		}
	}
	where := "not proven direct"
	if p.direct {
		where = "direct connection"
	}
	return s + " (" + p.family.String() + ", " + where + ")"
}

// choosePlan returns the plan for the option given (mode) and the stack.
func choosePlan(mode statementMode, st *stackInfo) *plan {
	p := &plan{family: st.family, direct: st.direct}
	switch {
	case mode == modeDriver, mode == modeAuto && st.direct:
		// Asked for, or proven safe: no server connection is shared.
		p.mode = modeDriver
	case st.family == familyPGX:
		// Parameters, sent so that no named statement is prepared: pgx's
		// exec mode, unless the connection's default already prepares
		// nothing.
		p.mode = modeText
		p.pgxDefault = st.pgxDefault
		switch {
		case st.pgxDefault == "exec", st.pgxDefault == "simple protocol":
		case st.pgxExec != nil:
			p.pgxMode = st.pgxExec
		default:
			p.refusal = fmt.Errorf("pgx would prepare named statements on a connection not proven direct (through a transaction pooler they fail "+
				"with \"prepared statement ... does not exist\"), and its exec mode cannot be chosen per statement here (%s): "+
				"add default_query_exec_mode=exec to the connection string, or, if no pooler is in between, give WithDriverPreparedStatements", st.pgxWhy)
		}
	default:
		p.mode = modeExecute
	}
	return p
}

// stack returns the backend's plan, probing the connection the first time
// (and again after a probe that failed, such as with the database down).
// Its error is either the probe's, with no plan, or the plan's refusal,
// with the plan: Migrate and Check refuse on either, requests only on the
// first. Its errors carry no "pgsession:" prefix; callers add theirs.
func (b *Backend) stack(ctx context.Context) (*plan, error) {
	if p := b.plan.Load(); p != nil {
		return p, p.refusal
	}
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if p := b.plan.Load(); p != nil {
		return p, p.refusal
	}
	ctx, bound := b.withTimeout(ctx)
	defer bound.stop()
	st, err := probeStack(ctx, b.db.DB, b.mode == modeAuto)
	if err != nil {
		return nil, fmt.Errorf("probe the database driver and connection: %w", err)
	}
	p := choosePlan(b.mode, st)
	b.plan.Store(p)
	return p, p.refusal
}

// StatementMode reports how the backend sends its statements, probing the
// connection first if no call has yet: "driver prepared statements", "SQL
// PREPARE/EXECUTE, values inlined" or "plain statements, values as
// parameters" (with pgx: in which of pgx's exec modes), with the driver
// found beneath any wrapper and whether the connection was proven to go
// straight to PostgreSQL, for example "driver prepared statements (lib/pq,
// direct connection)". Log it at startup to see what the default chose
// (docs/deployment.md says what each costs). The text is for people, not
// for parsing. When Migrate and Check would refuse the configuration (pgx
// whose statements cannot be kept off named prepared statements), the text
// comes with that error.
func (b *Backend) StatementMode(ctx context.Context) (string, error) {
	if b.err != nil {
		return "", b.err
	}
	p, err := b.stack(ctx)
	if p == nil {
		return "", fmt.Errorf("pgsession: %w", err)
	}
	if err != nil {
		return p.String(), fmt.Errorf("pgsession: %w", err)
	}
	return p.String(), nil
}

// probeFailure is the statement probeStack runs to see the driver's error
// type. Its message says, in the server's log, that the error is expected.
const probeFailure = `DO 'BEGIN RAISE EXCEPTION ''pgsession: probing the database driver (an expected error, once per backend)'' USING ERRCODE = ''P0001''; END'`

// probeEndpoints asks the server for both ends of the connection, its
// backend's PID and when that backend started (Unix time, seconds).
const probeEndpoints = `SELECT host(inet_client_addr()), inet_client_port(), host(inet_server_addr()), inet_server_port(), ` +
	`pg_backend_pid(), (SELECT extract(epoch FROM backend_start)::float8 FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid())`

// probePgxMode checks that a pgx.QueryExecMode given as a statement's first
// argument reaches pgx as an option: had a wrapper converted it into a
// value, pgx would count two arguments for one parameter and fail.
const probePgxMode = `SELECT $1::text`

// stackInfo is what probeStack learnt.
type stackInfo struct {
	family driverFamily
	direct bool
	// pgx only: its exec mode, checked (nil if unavailable, pgxWhy says
	// why), and the connection's default mode ("" if unknown).
	pgxExec    any
	pgxWhy     string
	pgxDefault string
}

// probeStack tells the driver beneath any wrappers and, when wantDirect,
// whether the connection goes straight to PostgreSQL; with pgx, how to
// send a statement in its exec mode. It runs a few statements on one pool
// connection.
func probeStack(ctx context.Context, db *sql.DB, wantDirect bool) (*stackInfo, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_, err = conn.ExecContext(ctx, probeFailure)
	st := &stackInfo{family: familyOf(err)}
	if err == nil || st.family == familyUnknown && sqlState(err) != "P0001" && !strings.Contains(err.Error(), "pgsession: probing") {
		// Not the server's answer to the probe: a connection failure, or
		// something that swallowed the error. Nothing is learnt.
		return nil, fmt.Errorf("unexpected answer to the probe statement: %w", errors.Join(err, errors.New("no error")))
	}
	var dc driverConnInfo
	if err := conn.Raw(func(c any) error { dc = inspectDriverConn(c, st.family); return nil }); err != nil {
		return nil, err
	}
	// With pgx, the probe's own statements that return rows are sent in its
	// exec mode too (a query, even without parameters, is otherwise a named
	// prepared statement, which a pooler may have from another client).
	var modeArg []any
	lenient := false
	if st.family == familyPGX {
		st.pgxDefault = dc.pgxDefault
		switch {
		case dc.pgxDefault == "exec", dc.pgxDefault == "simple protocol":
		case dc.pgxExec != nil:
			var echo string
			if err := conn.QueryRowContext(ctx, probePgxMode, dc.pgxExec, "pgsession").Scan(&echo); err != nil || echo != "pgsession" {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				st.pgxWhy = fmt.Sprintf("a wrapper does not hand a pgx.QueryExecMode argument to pgx: %v", err)
				lenient = true
			} else {
				st.pgxExec, modeArg = dc.pgxExec, []any{dc.pgxExec}
			}
		default:
			st.pgxWhy, lenient = dc.pgxWhy, true
		}
	}
	if wantDirect {
		if st.direct, err = provenDirect(ctx, conn, dc.transport, modeArg); err != nil {
			if !lenient || ctx.Err() != nil || sqlState(err) == "" {
				return nil, err
			}
			// pgx preparing the probe's statement behind a pooler: an
			// error from the server, so not proven.
			st.direct = false
		}
	}
	return st, nil
}

// provenDirect reports whether conn, whose transport on this side is
// transport ("tcp", "unix" or "" if unknown), goes straight to PostgreSQL.
// modeArg goes before the statement's arguments (pgx's exec mode, or none).
func provenDirect(ctx context.Context, conn *sql.Conn, transport string, modeArg []any) (bool, error) {
	var (
		client, server         sql.NullString
		clientPort, serverPort sql.NullInt64
		backendPID             sql.NullInt64
		backendStart           sql.NullFloat64
	)
	if err := conn.QueryRowContext(ctx, probeEndpoints, modeArg...).Scan(&client, &clientPort, &server, &serverPort, &backendPID, &backendStart); err != nil {
		return false, err
	}
	if !client.Valid && !server.Valid {
		// The server sees a Unix socket: proven only if ours is one too
		// (not a TCP connection to a pooler that reaches the server over
		// a Unix socket) and the postmaster is the peer of all of ours.
		if transport != "unix" || !backendPID.Valid || !backendStart.Valid {
			return false, nil
		}
		return unixPeersArePostmaster(int(backendPID.Int64), backendStart.Float64), nil
	}
	if !client.Valid || !server.Valid || !clientPort.Valid || !serverPort.Valid || transport == "unix" {
		return false, nil
	}
	local, err1 := addrPort(client.String, clientPort.Int64)
	remote, err2 := addrPort(server.String, serverPort.Int64)
	if err1 != nil || err2 != nil {
		return false, nil
	}
	return ownsTCPConn(local, remote), nil
}

func addrPort(host string, port int64) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(host)
	if err != nil || port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("bad endpoint %q:%d", host, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// familyOf tells the driver that produced err, through any wrapping.
func familyOf(err error) driverFamily {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return familyPQ
	}
	if fromPackage(err, "github.com/jackc/") {
		return familyPGX
	}
	return familyUnknown
}

// fromPackage reports whether err or an error it wraps has a type declared
// in a package whose path starts with prefix.
func fromPackage(err error, prefix string) bool {
	if err == nil {
		return false
	}
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if strings.HasPrefix(t.PkgPath(), prefix) {
		return true
	}
	switch e := err.(type) {
	case interface{ Unwrap() error }:
		return fromPackage(e.Unwrap(), prefix)
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			if fromPackage(inner, prefix) {
				return true
			}
		}
	}
	return false
}

// sqlState returns the SQLSTATE code err carries (*pq.Error and pgx's
// *pgconn.PgError, through any wrapping), or "".
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// withMode returns args preceded by the plan's pgx exec mode when it has
// one (see pgxMode), otherwise args: for run, and for the statements the
// backend sends outside run (Migrate's, Check's, the cleanup's,
// Distribute's) once stack has chosen the plan. With pgx's defaults a
// query is a named prepared statement even without parameters (not so an
// exec without them, which pgx sends as a simple Query message). p may be
// nil.
func (p *plan) withMode(args ...any) []any {
	if p == nil || p.pgxMode == nil {
		return args
	}
	return append(append(make([]any, 0, len(args)+1), p.pgxMode), args...)
}
