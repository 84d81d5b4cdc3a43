// Package pgsessiontest helps test code that uses pgsession: a controllable
// clock, an HTTP harness for handlers, and the backend conformance suite
// (TestBackend) that every backend.Backend must pass.
package pgsessiontest

import (
	"sync"
	"time"
)

// Clock is a manual clock for pgsession.Config.Now. It is safe for
// concurrent use. The zero value reads as the zero time; use NewClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads t until advanced.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time. Pass the method value as Config.Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
