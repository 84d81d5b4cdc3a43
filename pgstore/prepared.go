package pgstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// statementMode is how the backend sends its statements.
type statementMode int

const (
	modeAuto    statementMode = iota // the default: chosen from the driver stack (driverstack.go)
	modeText                         // plain statements
	modeExecute                      // SQL PREPARE and EXECUTE (WithPreparedStatements)
	modeDriver                       // the driver's prepared statements (WithDriverPreparedStatements)
)

// driverStatement returns the pool's prepared statement for the template
// query, preparing it on first use. database/sql prepares it again on each
// pool connection that runs it.
func (b *Backend) driverStatement(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := b.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := b.db.PrepareContext(ctx, b.render(query)) // values are parameters in this mode
	if err != nil {
		return nil, err
	}
	if actual, loaded := b.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close() // another call prepared it first
		return actual.(*sql.Stmt), nil
	}
	return st, nil
}

// Prepared statements (WithPreparedStatements).
//
// A statement is prepared with SQL PREPARE under a name derived from its
// text, and run with EXECUTE, its values inlined as literals as in the
// default mode. Both are plain SQL in one Query message, so a call stays one
// round trip and nothing depends on protocol-level statement names, which
// lib/pq numbers per client connection ("1", "2", ...): behind a
// transaction pooler such a name can resolve, on the server connection the
// pooler picked, to another statement prepared there by another client, and
// run it (a logout that runs a SELECT, answering 200 with nothing deleted).
// A name here is "pgsession_" and 192 bits of the SHA-256 of the text, the
// table included, so on any server connection it can only stand for this
// very statement: the worst a pooler can do is pick a server connection
// that lacks it, and EXECUTE then fails before running anything (SQLSTATE
// 26000, nothing done). The backend then sends, in one Query message, a DO
// block that prepares the statement unless the server connection has it,
// and the EXECUTE. PostgreSQL runs a message's statements as one implicit
// transaction, so a transaction pooler keeps them on one server connection,
// and the EXECUTE finds its statement whatever that connection held before.

// maxPrepareMisses bounds how often one call re-sends its statement after
// the server connection lacked it (once is enough; see above).
const maxPrepareMisses = 2

// preparedStatement is one statement template of the backend, prepared.
type preparedStatement struct {
	name    string // pgsession_<hash>
	params  int    // the number of $n parameters
	prepare string // "DO ...; ": prepares the statement unless the connection has it
}

// prepared returns the prepared form of the statement template query,
// computing it once per template.
func (b *Backend) prepared(query string) *preparedStatement {
	if ps, ok := b.stmts.Load(query); ok {
		return ps.(*preparedStatement)
	}
	text := b.render(query)
	sum := sha256.Sum256([]byte(text))
	ps := &preparedStatement{name: "pgsession_" + hex.EncodeToString(sum[:24]), params: maxParam(query)}
	// The DO body is a string literal holding the PREPARE as a string
	// literal: quoted twice, whatever the table name holds. The texts are
	// valid UTF-8 without NUL (render writes what setTable accepted).
	inner, _ := quoteString("PREPARE " + ps.name + " AS " + text)
	body, _ := quoteString("BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = '" + ps.name + "') THEN EXECUTE " +
		inner + "; END IF; END")
	ps.prepare = "DO " + body + "; "
	actual, _ := b.stmts.LoadOrStore(query, ps)
	return actual.(*preparedStatement)
}

// maxParam returns the highest $n in query.
func maxParam(query string) int {
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '$' {
			continue
		}
		j := i + 1
		for j < len(query) && '0' <= query[j] && query[j] <= '9' {
			j++
		}
		if k, err := strconv.Atoi(query[i+1 : j]); err == nil {
			n = max(n, k)
		}
		i = j - 1
	}
	return n
}

// execute returns "EXECUTE name(literals...)" for ps with args.
func (b *Backend) execute(ps *preparedStatement, args []any) (string, error) {
	if len(args) != ps.params {
		return "", fmt.Errorf("pgsession: statement %s wants %d arguments, has %d", ps.name, ps.params, len(args))
	}
	var out strings.Builder
	out.Grow(len("EXECUTE (") + len(ps.name) + 80*len(args))
	out.WriteString("EXECUTE ")
	out.WriteString(ps.name)
	for i, a := range args {
		if i == 0 {
			out.WriteByte('(')
		} else {
			out.WriteByte(',')
		}
		if err := writeLiteral(&out, a); err != nil {
			return "", err
		}
	}
	if len(args) > 0 {
		out.WriteByte(')')
	}
	return out.String(), nil
}

// retry returns the text to send after text failed with err, and whether
// to send it: the EXECUTE preceded by the DO block that prepares the
// statement, when the server connection lacked it. That error comes before
// the EXECUTE ran, so nothing was done.
func (ps *preparedStatement) retry(text string, err error) (string, bool) {
	if sqlState(err) != "26000" || !strings.Contains(err.Error(), ps.name) {
		return "", false
	}
	return ps.prepare + strings.TrimPrefix(text, ps.prepare), true
}
