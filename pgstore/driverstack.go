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
//     between, is proved when the server's view of its client (address and
//     port, inet_client_addr and inet_client_port) and of itself is a TCP
//     connection that this very process holds (ownsTCPConn: Linux's
//     /proc/self). A pooler or proxy in between shows the server its own
//     socket, never ours; a Unix socket, another system, or any doubt proves
//     nothing.
//
// The choice (choosePlan) is one-sided: the driver's protocol-level prepared
// statements, the fastest mode, are used only on a proven direct
// connection, where no server connection is shared. Everywhere else lib/pq
// and unknown drivers get SQL PREPARE/EXECUTE under content-hashed names
// with the values inlined (prepared.go), which is correct behind any
// pooler; pgx gets parameters, which it sends as statements named by a hash
// of their text (or unnamed in one message, with default_query_exec_mode=
// exec), so behind a pooler without prepared-statement support the worst
// case is a loud error that explain turns into advice. A wrong guess costs
// speed, never correctness.

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
	}
	where := "not proven direct"
	if p.direct {
		where = "direct connection"
	}
	return s + " (" + p.family.String() + ", " + where + ")"
}

// choosePlan returns the plan for the option given (mode) and the stack.
func choosePlan(mode statementMode, family driverFamily, direct bool) *plan {
	p := &plan{family: family, direct: direct}
	switch {
	case mode == modeDriver, mode == modeAuto && direct:
		// Asked for, or proven safe: no server connection is shared.
		p.mode = modeDriver
	case family == familyPGX:
		// pgx names its prepared statements by a hash of their text, or
		// sends them unnamed in one message (default_query_exec_mode=exec).
		p.mode = modeText
	default:
		p.mode = modeExecute
	}
	return p
}

// stack returns the backend's plan, probing the connection the first time
// (and again after a probe that failed, such as with the database down).
func (b *Backend) stack(ctx context.Context) (*plan, error) {
	if p := b.plan.Load(); p != nil {
		return p, nil
	}
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if p := b.plan.Load(); p != nil {
		return p, nil
	}
	ctx, bound := b.withTimeout(ctx)
	defer bound.stop()
	family, direct, err := probeStack(ctx, b.db.DB, b.mode == modeAuto)
	if err != nil {
		return nil, fmt.Errorf("pgsession: probe the database driver and connection: %w", err)
	}
	p := choosePlan(b.mode, family, direct)
	b.plan.Store(p)
	return p, nil
}

// StatementMode reports how the backend sends its statements, probing the
// connection first if no call has yet: "driver prepared statements", "SQL
// PREPARE/EXECUTE, values inlined" or "plain statements, values as
// parameters", with the driver found beneath any wrapper and whether the
// connection was proven to go straight to PostgreSQL, for example "driver
// prepared statements (lib/pq, direct connection)". Log it at startup to
// see what the default chose (the README's Deployment section says what
// each costs). The text is for people, not for parsing.
func (b *Backend) StatementMode(ctx context.Context) (string, error) {
	if b.err != nil {
		return "", b.err
	}
	p, err := b.stack(ctx)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

// probeFailure is the statement probeStack runs to see the driver's error
// type. Its message says, in the server's log, that the error is expected.
const probeFailure = `DO 'BEGIN RAISE EXCEPTION ''pgsession: probing the database driver (an expected error, once per backend)'' USING ERRCODE = ''P0001''; END'`

// probeEndpoints asks the server for both ends of the connection.
const probeEndpoints = `SELECT host(inet_client_addr()), inet_client_port(), host(inet_server_addr()), inet_server_port()`

// probeStack tells the driver beneath any wrappers and, when wantDirect,
// whether the connection goes straight to PostgreSQL. It runs two plain
// statements without parameters on one pool connection.
func probeStack(ctx context.Context, db *sql.DB, wantDirect bool) (driverFamily, bool, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	_, err = conn.ExecContext(ctx, probeFailure)
	family := familyOf(err)
	if err == nil || family == familyUnknown && sqlState(err) != "P0001" && !strings.Contains(err.Error(), "pgsession: probing") {
		// Not the server's answer to the probe: a connection failure, or
		// something that swallowed the error. Nothing is learnt.
		return 0, false, fmt.Errorf("unexpected answer to the probe statement: %w", errors.Join(err, errors.New("no error")))
	}
	if !wantDirect || family == familyPGX {
		return family, false, nil
	}
	var (
		client, server         sql.NullString
		clientPort, serverPort sql.NullInt64
	)
	if err := conn.QueryRowContext(ctx, probeEndpoints).Scan(&client, &clientPort, &server, &serverPort); err != nil {
		return 0, false, err
	}
	if !client.Valid || !server.Valid || !clientPort.Valid || !serverPort.Valid {
		return family, false, nil // a Unix socket: nothing proved
	}
	local, err1 := addrPort(client.String, clientPort.Int64)
	remote, err2 := addrPort(server.String, serverPort.Int64)
	if err1 != nil || err2 != nil {
		return family, false, nil
	}
	return family, ownsTCPConn(local, remote), nil
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
