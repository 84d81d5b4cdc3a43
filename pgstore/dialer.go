package pgstore

import (
	"context"
	"net"
	"time"
)

// ReadDeadlineDialer is a dialer for lib/pq (pq.Connector.Dialer) that
// bounds how long a connection waits for the server's answer: each write
// arms a read deadline of Timeout, so a read that gets nothing that long
// after the client last sent fails instead of blocking.
//
// lib/pq needs it for WithQueryTimeout to hold when the network or the
// server stalls rather than fails: lib/pq reads without a deadline and
// honours a context only by sending PostgreSQL a cancel request over a new
// connection, which a stalled network or server never acts on, so a
// request blocks for as long as the stall lasts. No lib/pq connection
// setting bounds that read (connect_timeout covers the connection's setup
// only, and TCP keepalives notice a vanished peer after minutes and a
// stalled one never, its kernel still answering them). pgx
// needs nothing of the kind: it sets the deadline itself when a context
// ends.
//
// Set Timeout to at least the longest statement the pool runs, such as the
// backend's query timeout: a statement running longer fails the same way.
// Do not use it for pq.Listener connections, which wait idle for
// notifications.
//
//	c, err := pq.NewConnector(dsn)
//	...
//	c.Dialer(pgstore.ReadDeadlineDialer{Timeout: 5 * time.Second})
//	db := sqlx.NewDb(sql.OpenDB(c), "postgres")
type ReadDeadlineDialer struct {
	Timeout time.Duration
	Dialer  net.Dialer
}

// Dial connects to address on network.
func (d ReadDeadlineDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout connects to address on network within timeout.
func (d ReadDeadlineDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// DialContext connects to address on network while ctx lasts.
func (d ReadDeadlineDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err // unwrapped: lib/pq inspects its type
	}
	if d.Timeout <= 0 {
		return c, nil
	}
	return &readDeadlineConn{Conn: c, timeout: d.Timeout}, nil
}

// readDeadlineConn arms a read deadline at each write. lib/pq clears the
// deadlines after connecting; the next write arms the read deadline again.
type readDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *readDeadlineConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
