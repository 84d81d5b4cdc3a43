package pgtest

import (
	"context"
	"database/sql"
	"database/sql/driver"

	"github.com/lib/pq"
)

// WrappedPQ is the database/sql driver name of lib/pq inside a minimal
// driver wrapper, as tracing wrappers (otelsql, sqlhooks, APM agents) put
// it: db.Driver() is the wrapper, and the wrapper's connections hand every
// call and error through unchanged. Tests use it to check that the backend
// does not depend on recognising lib/pq's Go type.
const WrappedPQ = "pgtest-wrapped-pq"

func init() { sql.Register(WrappedPQ, wrapDriver{&pq.Driver{}}) }

type wrapDriver struct{ inner driver.Driver }

func (d wrapDriver) Open(name string) (driver.Conn, error) {
	c, err := d.inner.Open(name)
	if err != nil {
		return nil, err
	}
	return wrapConn{c}, nil
}

// wrapConn implements the interfaces database/sql looks for, each by
// calling lib/pq's.
type wrapConn struct{ inner driver.Conn }

func (c wrapConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }
func (c wrapConn) Close() error                              { return c.inner.Close() }
func (c wrapConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c wrapConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c wrapConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c wrapConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.inner.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c wrapConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.inner.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c wrapConn) Ping(ctx context.Context) error { return c.inner.(driver.Pinger).Ping(ctx) }

func (c wrapConn) ResetSession(ctx context.Context) error {
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c wrapConn) IsValid() bool {
	v, ok := c.inner.(driver.Validator)
	return !ok || v.IsValid()
}
