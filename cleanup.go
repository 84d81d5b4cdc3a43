package pgsession

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgsession/pgsession/backend"
)

// cleanupBatch is the most rows one cleanup statement removes, so a sweep
// never holds many locks or grows one transaction.
const cleanupBatch = 1000

// DeleteExpired removes the sessions past their idle or absolute timeout,
// in batches of at most 1,000 rows per statement, and returns how many it
// removed. Expired sessions are already ignored by requests; this only
// reclaims their storage. It returns early with the count so far if ctx ends
// or the backend fails. Unlike RunCleanup it takes no cleanup lock; calls
// running at the same time are still safe (on PostgreSQL each skips the rows
// another is deleting).
func (m *Manager) DeleteExpired(ctx context.Context) (int, error) {
	return m.deleteExpired(ctx, m.cfg.Backend.DeleteExpired)
}

// deleteFunc has the shape of Backend.DeleteExpired.
type deleteFunc func(ctx context.Context, c backend.Cutoffs, limit int) (int, error)

// deleteExpired is DeleteExpired with the statements run by del.
func (m *Manager) deleteExpired(ctx context.Context, del deleteFunc) (int, error) {
	c := m.p.cutoffs(m.cfg.Now())
	total := 0
	for {
		n, err := del(ctx, c, cleanupBatch)
		total += n
		m.stats.deletes.Add(uint64(n))
		if err != nil {
			return total, fmt.Errorf("pgsession: delete expired sessions: %w", err)
		}
		if n < cleanupBatch {
			return total, nil
		}
	}
}

// cutoffs returns the Cutoffs at now: the access and creation times before
// which a session without a lifetime of its own has expired (zero where
// that timeout is off).
func (t policy) cutoffs(now time.Time) backend.Cutoffs {
	c := backend.Cutoffs{Now: now}
	if t.idle > 0 {
		c.IdleBefore = now.Add(-t.idle)
	}
	if t.absolute > 0 {
		c.CreatedBefore = now.Add(-t.absolute)
	}
	return c
}

// RunCleanup sweeps expired sessions (DeleteExpired) now and then every
// interval until ctx is done, and then returns ctx's error. Each sweep logs
// what it removed, or its failure, through Config.Logger; a failed sweep is
// retried at the next interval. Sweeps never overlap within this Manager.
// When the backend is a backend.ExclusiveCleaner (PostgreSQL is), batches never
// overlap across instances either: an instance that finds another one
// deleting skips that round, or ends its sweep there if it had begun. On
// PostgreSQL the exclusion is a transaction-scoped advisory lock taken by
// each batch's single statement, so it works through any connection pooler
// and ends with the statement. Run it in its own goroutine:
//
//	go m.RunCleanup(ctx, 15*time.Minute)
func (m *Manager) RunCleanup(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("%w: RunCleanup interval must be positive, got %v", ErrInvalidConfig, interval)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m.sweep(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

var (
	// errSweepBusy means another sweep is deleting.
	errSweepBusy = errors.New("pgsession: another cleanup is running")
	// errSweepYield means another instance took over a sweep midway.
	errSweepYield = errors.New("pgsession: another cleanup took over")
)

// sweep runs one cleanup round unless another one is running here or, for
// a backend.ExclusiveCleaner, anywhere. It logs the outcome.
func (m *Manager) sweep(ctx context.Context) {
	n, err := m.sweepOnce(ctx)
	log := m.cfg.Logger
	switch {
	case errors.Is(err, errSweepBusy):
		log.DebugContext(ctx, "pgsession: cleanup skipped, another sweep is running")
	case err != nil && ctx.Err() == nil:
		log.ErrorContext(ctx, "pgsession: cleanup failed", "err", err, "removed", n)
	case err == nil:
		log.InfoContext(ctx, "pgsession: cleanup", "removed", n)
	}
}

func (m *Manager) sweepOnce(ctx context.Context) (int, error) {
	if !m.sweeping.TryLock() {
		return 0, errSweepBusy
	}
	defer m.sweeping.Unlock()
	ex, ok := m.cfg.Backend.(backend.ExclusiveCleaner)
	if !ok {
		return m.DeleteExpired(ctx)
	}
	first := true
	n, err := m.deleteExpired(ctx, func(ctx context.Context, c backend.Cutoffs, limit int) (int, error) {
		n, ok, err := ex.DeleteExpiredExclusive(ctx, c, limit)
		switch {
		case err != nil:
			return n, err
		case !ok && first:
			return 0, errSweepBusy
		case !ok:
			return 0, errSweepYield
		}
		first = false
		return n, nil
	})
	if errors.Is(err, errSweepYield) {
		return n, nil
	}
	return n, err
}
