package pgstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The query timeout (WithQueryTimeout) bounds every statement, its wait for
// a pool connection included. A context.WithTimeout per statement would
// cost a runtime timer and a child context registered with the request's,
// together about a tenth of the CPU of a read. Instead each statement runs
// under a stmtContext, and one goroutine per Backend (the watch), running
// only while statements are in flight, checks them every tick: it ends a
// statement's context when its deadline has passed or its parent has
// ended. So the timeout, and a request's cancellation (a client gone), take
// effect within one tick: 10 ms, or an eighth of a timeout below 80 ms.

// watch ends the contexts of a Backend's statements in flight, as above.
type watch struct {
	timeout, tick time.Duration

	mu       sync.Mutex
	inflight *stmtContext // a doubly linked list of the statements in flight
	running  bool         // the watcher goroutine runs
}

// idleTicks is how many ticks with no statement in flight the watcher waits
// before it exits; the next statement starts it again.
const idleTicks = 100

func newWatch(timeout time.Duration) *watch {
	return &watch{timeout: timeout, tick: min(max(timeout/8, time.Millisecond), 10*time.Millisecond)}
}

// start returns the context of a statement that begins now under parent,
// ended by the watch at the deadline, or when parent ends, or by stop.
func (w *watch) start(parent context.Context) *stmtContext {
	c := &stmtContext{parent: parent, deadline: time.Now().Add(w.timeout), done: make(chan struct{}), w: w}
	if err := parent.Err(); err != nil {
		c.end(err)
		return c
	}
	w.mu.Lock()
	c.next = w.inflight
	if c.next != nil {
		c.next.prev = c
	}
	w.inflight, c.listed = c, true
	if !w.running {
		w.running = true
		go w.run()
	}
	w.mu.Unlock()
	return c
}

// unlink removes c from the statements in flight. w.mu must be held.
func (w *watch) unlink(c *stmtContext) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.inflight = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// run is the watcher: every tick it ends the contexts whose deadline has
// passed or whose parent has ended, and it exits after idleTicks ticks
// with none in flight.
func (w *watch) run() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	type ending struct {
		c   *stmtContext
		err error
	}
	var ended []ending
	for idle := 0; ; {
		now := <-t.C
		ended = ended[:0]
		w.mu.Lock()
		if w.inflight == nil {
			if idle++; idle >= idleTicks {
				w.running = false
				w.mu.Unlock()
				return
			}
		} else {
			idle = 0
		}
		for c := w.inflight; c != nil; c = c.next {
			err := c.parent.Err()
			if err == nil && !now.Before(c.deadline) {
				err = context.DeadlineExceeded
			}
			if err != nil {
				ended = append(ended, ending{c, err})
			}
		}
		w.mu.Unlock()
		for _, e := range ended {
			e.c.end(e.err) // which takes it off the statements in flight
		}
		clear(ended) // drop the references until the next tick
	}
}

// stmtContext is the context of one statement under the query timeout: its
// parent's values, the earlier of the two deadlines, and a Done channel
// that the watch closes (see watch). It implements the AfterFunc method
// through which the context package derives a child from a context of a
// type of its own, so database/sql's child context of a query (cancelled
// when its rows close) costs no goroutine. context.Cause of it is its Err
// or its parent's cause: it holds no cause of its own.
type stmtContext struct {
	parent   context.Context
	deadline time.Time
	done     chan struct{}
	err      atomic.Pointer[error] // set once, under mu, before done closes
	w        *watch

	prev, next *stmtContext // in w.inflight; guarded by w.mu
	listed     bool         // in w.inflight; guarded by w.mu

	mu        sync.Mutex
	first     afterFunc    // the first function given to AfterFunc (usually the only one)
	firstUsed bool         // first was given out
	after     []*afterFunc // the others
}

// afterFunc is a function given to stmtContext.AfterFunc; f is nil once it
// was called or stopped.
type afterFunc struct {
	c *stmtContext
	f func()
}

// stop ends c when its statement has returned, as the cancel function of a
// context.WithTimeout does: its Err becomes context.Canceled unless it
// ended before. A nil c (no query timeout) has nothing to stop.
func (c *stmtContext) stop() {
	if c != nil {
		c.end(context.Canceled)
	}
}

// end ends c with err, unless it has ended already (err is then dropped),
// takes it off the statements in flight, and calls the functions given to
// AfterFunc.
func (c *stmtContext) end(err error) {
	c.mu.Lock()
	if c.err.Load() != nil {
		c.mu.Unlock()
		return
	}
	c.err.Store(&err)
	close(c.done)
	first := c.first.f
	c.first.f = nil
	var rest []func()
	for _, a := range c.after {
		if a.f != nil {
			rest = append(rest, a.f)
			a.f = nil
		}
	}
	c.mu.Unlock()
	c.w.mu.Lock()
	c.w.unlink(c)
	c.w.mu.Unlock()
	if first != nil {
		first()
	}
	for _, f := range rest {
		f()
	}
}

// Deadline returns the statement's deadline, or the parent's when that is
// earlier.
func (c *stmtContext) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Done returns a channel that is closed when c ends.
func (c *stmtContext) Done() <-chan struct{} { return c.done }

// Err returns nil until c ends, then why: context.DeadlineExceeded at the
// deadline, the parent's Err when it ended first, context.Canceled after
// the statement returned.
func (c *stmtContext) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Value returns the parent's value for key.
func (c *stmtContext) Value(key any) any { return c.parent.Value(key) }

// AfterFunc arranges for f to be called once c ends (at once, in a
// goroutine of its own, if it has), and returns a function that cancels
// the call, reporting whether it did. The context package calls it to
// register the cancellation of a child, context.WithCancel(c); f then runs
// in the goroutine that ends c, after c's lock is released.
func (c *stmtContext) AfterFunc(f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err.Load() != nil {
		go f()
		return func() bool { return false }
	}
	a := &c.first
	if c.firstUsed {
		a = new(afterFunc)
		c.after = append(c.after, a)
	}
	c.firstUsed = true
	a.c, a.f = c, f
	return a.stop
}

// stop keeps a's function from being called, reporting whether it did.
func (a *afterFunc) stop() bool {
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	stopped := a.f != nil
	a.f = nil
	return stopped
}
