package pgtest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of a PostgreSQL server that a
// test controls: it passes traffic through, delays it, holds it
// (Blackhole), cuts connections right after a statement reached the server
// (CutAfterStatements), or switches to another server (SetTarget, for
// failover). It understands just enough of the PostgreSQL protocol to find
// where a statement ends in the client's stream.
type Proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	target   string
	latency  time.Duration
	gate     chan struct{} // closed while traffic flows; open while blackholed
	cutEvery int64
	cutReset bool
	links    map[*link]struct{}
	closed   bool
	stmts    atomic.Int64
	cuts     atomic.Int64
	accepted atomic.Int64
}

// link is one client connection and its server connection.
type link struct {
	client, server net.Conn
	cut            atomic.Bool // drop the next server chunk and close
	once           sync.Once
}

// close ends both connections; rst makes them end with a TCP reset.
func (l *link) close(rst bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if tc, ok := c.(*net.TCPConn); ok && rst {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
	})
}

// NewProxy starts a proxy in front of target ("host:port"), closed when t
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: proxy: %v", err)
	}
	open := make(chan struct{})
	close(open)
	p := &Proxy{ln: ln, target: target, gate: open, links: map[*link]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(p.Close)
	return p
}

// NewProxyFor starts a proxy in front of the server of the connection URL u
// and returns it with u rewritten to go through it.
func NewProxyFor(t testing.TB, u string) (*Proxy, string) {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatalf("pgtest: proxy: %v", err)
	}
	p := NewProxy(t, pu.Host)
	pu.Host = p.Addr()
	return p, pu.String()
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetTarget sends new connections to addr. Existing ones keep their server;
// use Reset to cut them.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// SetLatency delays every chunk from the client to the server by d, adding
// d to each round trip.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// Blackhole stops (on) or resumes (off) forwarding in both directions. The
// connections stay open and new ones are accepted, but nothing they send is
// delivered until traffic resumes: a stalled network, not a broken one.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate: // flowing
		if on {
			p.gate = make(chan struct{})
		}
	default:
		if !on {
			close(p.gate)
		}
	}
}

// CutAfterStatements cuts the connection of every n-th statement (0: none)
// right after the statement reached the server: the server's answer is
// dropped and both connections are closed, with a TCP reset when reset is
// set, else with an orderly FIN (the client reads EOF). The client cannot
// know whether the statement ran.
func (p *Proxy) CutAfterStatements(n int, reset bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutEvery, p.cutReset = int64(n), reset
}

// Reset cuts every open connection with a TCP reset.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
	return len(links)
}

// ProxyStats are a Proxy's counters.
type ProxyStats struct {
	Accepted   int64 // client connections accepted
	Statements int64 // statements (simple Query, or Execute up to Sync) forwarded
	Cuts       int64 // connections cut after a statement
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Accepted: p.accepted.Load(), Statements: p.stmts.Load(), Cuts: p.cuts.Load()}
}

// Close stops the proxy, cuts every connection and waits for its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Reset()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		target, closed := p.target, p.closed
		p.mu.Unlock()
		if closed {
			_ = c.Close()
			continue
		}
		p.wg.Go(func() { p.handle(c, target) })
	}
}

func (p *Proxy) handle(c net.Conn, target string) {
	s, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	l := &link{client: c, server: s}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close(true)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { p.toServer(l) })
	wg.Go(func() { p.toClient(l) })
	wg.Wait()
}

// wait holds a chunk of the server's stream while the proxy is blackholed.
func (p *Proxy) wait() { <-p.gateNow() }

// gateNow returns the current gate.
func (p *Proxy) gateNow() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate
}

// toServer forwards the client's stream. While blackholed it keeps reading
// and holds what it read; if the client gives up meanwhile, what it held is
// dropped, as a stalled network would never deliver it, instead of reaching
// the server in a burst when traffic resumes.
func (p *Proxy) toServer(l *link) {
	defer l.close(false)
	chunks := make(chan []byte)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := l.client.Read(buf)
			if n > 0 {
				select {
				case chunks <- buf[:n]:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var scan msgScanner
	var held [][]byte
	for {
		gate := p.gateNow()
		select {
		case <-gate: // flowing
			if len(held) > 0 {
				c := held[0]
				held = held[1:]
				if !p.forward(l, &scan, c) {
					return
				}
				continue
			}
			gate = nil // nothing to wait for but the client
		default:
		}
		select {
		case c, ok := <-chunks:
			if !ok {
				return // the client is gone; anything held is dropped
			}
			held = append(held, c)
		case <-gate: // traffic resumes
		}
	}
}

// forward sends one chunk of the client's stream to the server, after the
// latency, marking the link for a cut when the chunk ends a statement that
// is due for one. It reports false when the server connection failed.
func (p *Proxy) forward(l *link, scan *msgScanner, c []byte) bool {
	stmts := scan.feed(c)
	p.mu.Lock()
	latency := p.latency
	p.mu.Unlock()
	if latency > 0 {
		time.Sleep(latency)
	}
	// Decided before the write, so the answer cannot slip through.
	for range stmts {
		k := p.stmts.Add(1)
		p.mu.Lock()
		every := p.cutEvery
		p.mu.Unlock()
		if every > 0 && k%every == 0 {
			l.cut.Store(true)
		}
	}
	_, err := l.server.Write(c)
	return err == nil
}

func (p *Proxy) toClient(l *link) {
	defer l.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			p.wait()
			if l.cut.Load() {
				p.cuts.Add(1)
				p.mu.Lock()
				rst := p.cutReset
				p.mu.Unlock()
				l.close(rst)
				return
			}
			if _, werr := l.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Protocol codes of untyped messages sent before the startup message.
const (
	sslRequest    = 80877103
	gssEncRequest = 80877104
)

// msgScanner follows message boundaries in a client's stream: an untyped
// startup message (preceded by SSL or GSS encryption requests), then typed
// messages of a 1-byte type and a 4-byte length that counts itself.
type msgScanner struct {
	started bool   // past the startup message
	hdr     []byte // the current message's header, as far as read
	skip    int    // bytes of the current message's body still to come
	execute bool   // an Execute was seen since the last Sync
}

// feed consumes b and returns one entry per statement whose last message
// began in b: a simple Query, or a Sync that follows an Execute.
func (s *msgScanner) feed(b []byte) (stmts []struct{}) {
	for len(b) > 0 {
		if s.skip > 0 {
			k := min(s.skip, len(b))
			s.skip -= k
			b = b[k:]
			continue
		}
		want := 5 // type and length
		if !s.started {
			want = 8 // length and protocol code
		}
		k := min(want-len(s.hdr), len(b))
		s.hdr = append(s.hdr, b[:k]...)
		b = b[k:]
		if len(s.hdr) < want {
			continue
		}
		if !s.started {
			n := int(binary.BigEndian.Uint32(s.hdr[:4]))
			code := binary.BigEndian.Uint32(s.hdr[4:])
			s.skip = max(n-8, 0)
			s.started = code != sslRequest && code != gssEncRequest
		} else {
			s.skip = max(int(binary.BigEndian.Uint32(s.hdr[1:]))-4, 0)
			switch s.hdr[0] {
			case 'Q':
				stmts = append(stmts, struct{}{})
			case 'E':
				s.execute = true
			case 'S':
				if s.execute {
					stmts = append(stmts, struct{}{})
				}
				s.execute = false
			}
		}
		s.hdr = s.hdr[:0]
	}
	return stmts
}

// String describes the proxy, for logs.
func (p *Proxy) String() string {
	st := p.Stats()
	return fmt.Sprintf("proxy %s: %d connections, %d statements, %d cut", p.Addr(), st.Accepted, st.Statements, st.Cuts)
}
