package pgstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// The contexts of the query timeout's watch (timeout.go) keep the
// context.Context contract: Done closes once, Err is nil until then and
// then says why, and children derived with context.WithCancel follow.

// ended waits up to limit for c to end and returns how long it took.
func ended(t *testing.T, c context.Context, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-c.Done():
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("the context did not end within %v (Err %v)", limit, c.Err())
		return 0
	}
}

func TestWatchDeadline(t *testing.T) {
	const timeout = 40 * time.Millisecond
	w := newWatch(timeout)
	start := time.Now()
	c := w.start(context.Background())
	defer c.stop()
	if c.Err() != nil {
		t.Fatalf("Err before the deadline = %v", c.Err())
	}
	if d, ok := c.Deadline(); !ok || d.Before(start.Add(timeout)) || d.After(time.Now().Add(timeout)) {
		t.Errorf("Deadline = %v, %v; want about %v from now", d, ok, timeout)
	}
	ended(t, c, time.Second)
	// It ends no earlier than the deadline and at most a tick (5 ms here)
	// after it, plus scheduling.
	if took := time.Since(start); took < timeout || took > timeout+w.tick+50*time.Millisecond {
		t.Errorf("ended after %v, want %v to %v", took, timeout, timeout+w.tick)
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("Err = %v, want DeadlineExceeded", c.Err())
	}
	c.stop() // after the end: Err stays
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("Err after stop = %v", c.Err())
	}
}

func TestWatchParentCancelled(t *testing.T) {
	w := newWatch(time.Hour)
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	c := w.start(parent)
	defer c.stop()
	if c.Value(key{}) != "v" {
		t.Errorf("Value = %v, want the parent's", c.Value(key{}))
	}
	child, cancelChild := context.WithCancel(c) // database/sql derives one per query
	defer cancelChild()
	time.Sleep(2 * w.tick)
	if c.Err() != nil || child.Err() != nil {
		t.Fatalf("ended before the parent: %v, %v", c.Err(), child.Err())
	}
	cancel()
	if took := ended(t, c, time.Second); took > w.tick+50*time.Millisecond {
		t.Errorf("the parent's cancellation took %v to arrive, want at most a tick (%v)", took, w.tick)
	}
	ended(t, child, time.Second)
	if !errors.Is(c.Err(), context.Canceled) || !errors.Is(child.Err(), context.Canceled) {
		t.Errorf("Err = %v, child %v; want Canceled", c.Err(), child.Err())
	}
}

func TestWatchParentEndedBefore(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	cancel()
	c := newWatch(time.Hour).start(parent)
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want the parent's", c.Err())
	}
	ended(t, c, time.Millisecond)
	child, cancelChild := context.WithCancel(c)
	defer cancelChild()
	ended(t, child, time.Second)
}

func TestWatchEarlierParentDeadline(t *testing.T) {
	parent, cancel := context.WithDeadline(context.Background(), time.Now().Add(time.Minute))
	defer cancel()
	c := newWatch(time.Hour).start(parent)
	defer c.stop()
	if d, _ := c.Deadline(); !d.Equal(func() time.Time { d, _ := parent.Deadline(); return d }()) {
		t.Errorf("Deadline = %v, want the parent's, earlier", d)
	}
}

// stop ends the context like a cancel function: Canceled, children ended,
// and a child cancelled before is no longer called.
func TestWatchStop(t *testing.T) {
	w := newWatch(time.Hour)
	c := w.start(context.Background())
	early, cancelEarly := context.WithCancel(c)
	cancelEarly()
	late, cancelLate := context.WithCancel(c)
	defer cancelLate()
	var calls int
	stop := c.AfterFunc(func() { calls++ })
	stopped := c.AfterFunc(func() { t.Error("a stopped AfterFunc was called") })
	if !stopped() || stopped() {
		t.Error("stop of a pending AfterFunc: want true, then false")
	}
	c.stop()
	if !errors.Is(c.Err(), context.Canceled) || !errors.Is(late.Err(), context.Canceled) || !errors.Is(early.Err(), context.Canceled) {
		t.Errorf("after stop: Err %v, children %v, %v", c.Err(), late.Err(), early.Err())
	}
	if calls != 1 || stop() {
		t.Errorf("AfterFunc called %d times, stop after the call reported true", calls)
	}
	ran := make(chan struct{})
	if c.AfterFunc(func() { close(ran) })() {
		t.Error("stop of an AfterFunc given after the end reported true")
	}
	<-ran
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.inflight != nil {
		t.Error("a stopped statement is still in flight")
	}
}

// Statements starting and stopping from many goroutines while the watcher
// ends some of them (go test -race), and the watcher exits once nothing
// has been in flight for idleTicks ticks.
func TestWatchConcurrentAndIdleExit(t *testing.T) {
	w := newWatch(8 * time.Millisecond) // a tick of 1 ms
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 300 {
				c := w.start(context.Background())
				child, cancel := context.WithCancel(c)
				if i%3 == 0 {
					<-child.Done() // left to the deadline
					if !errors.Is(c.Err(), context.DeadlineExceeded) {
						t.Errorf("Err = %v, want DeadlineExceeded", c.Err())
					}
				}
				cancel()
				c.stop()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		running, inflight := w.running, w.inflight
		w.mu.Unlock()
		if inflight != nil {
			t.Fatal("statements left in flight")
		}
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher still runs with nothing in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := w.start(context.Background()) // and starts again
	ended(t, c, time.Second)
}
