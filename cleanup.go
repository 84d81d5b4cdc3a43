package pgsession

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// cleanupBatch is the most rows one cleanup statement removes, so a sweep
// never holds many locks or grows one transaction.
const cleanupBatch = 1000

// CleanupLocker is implemented by backends shared between processes (the
// PostgreSQL backend uses an advisory lock), so that of several instances
// running RunCleanup only one sweeps at a time.
type CleanupLocker interface {
	// TryLockCleanup takes the cleanup lock without waiting. It reports false
	// when another holder has it; otherwise unlock releases it.
	TryLockCleanup(ctx context.Context) (unlock func(), ok bool, err error)
}

// DeleteExpired removes the sessions past their idle or absolute timeout,
// in batches of at most 1,000 rows per statement, and returns how many it
// removed. Expired sessions are already ignored by requests; this only
// reclaims their storage. It returns early with the count so far if ctx ends
// or the backend fails.
func (m *Manager) DeleteExpired(ctx context.Context) (int, error) {
	idleBefore, createdBefore := m.p.cutoffs(m.cfg.Now())
	if idleBefore.IsZero() && createdBefore.IsZero() {
		return 0, nil // no timeouts: nothing ever expires
	}
	total := 0
	for {
		n, err := m.cfg.Backend.DeleteExpired(ctx, idleBefore, createdBefore, cleanupBatch)
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

// cutoffs returns the access and creation times before which a session has
// expired at now (zero where that timeout is off).
func (t policy) cutoffs(now time.Time) (idleBefore, createdBefore time.Time) {
	if t.idle > 0 {
		idleBefore = now.Add(-t.idle)
	}
	if t.absolute > 0 {
		createdBefore = now.Add(-t.absolute)
	}
	return idleBefore, createdBefore
}

// RunCleanup sweeps expired sessions (DeleteExpired) now and then every
// interval until ctx is done, and then returns ctx's error. Each sweep logs
// what it removed, or its failure, through Config.Logger; a failed sweep is
// retried at the next interval. Sweeps never overlap: not within this
// Manager, and, when the backend is a CleanupLocker (PostgreSQL is), not
// across instances either; an instance that finds another sweeping skips
// that round. Run it in its own goroutine:
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

// errSweepBusy means another sweep holds the cleanup lock.
var errSweepBusy = errors.New("pgsession: another cleanup is running")

// sweep runs one cleanup round unless another one is running here or, for
// a CleanupLocker backend, anywhere. It logs the outcome.
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
	if l, ok := m.cfg.Backend.(CleanupLocker); ok {
		unlock, ok, err := l.TryLockCleanup(ctx)
		if err != nil {
			return 0, fmt.Errorf("pgsession: cleanup lock: %w", err)
		}
		if !ok {
			return 0, errSweepBusy
		}
		defer unlock()
	}
	return m.DeleteExpired(ctx)
}

// TryLockCleanup implements CleanupLocker with a session-level PostgreSQL
// advisory lock, keyed by the table, held on a connection of its own until
// unlock.
func (b *PostgresBackend) TryLockCleanup(ctx context.Context) (unlock func(), ok bool, err error) {
	if b.err != nil {
		return nil, false, b.err
	}
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	const key = `SELECT %s(1886610285, hashtext($1))` // classid: "pgsm" in ASCII
	if err := conn.QueryRowContext(ctx, fmt.Sprintf(key, "pg_try_advisory_lock"), b.table).Scan(&ok); err != nil || !ok {
		_ = conn.Close()
		return nil, false, err
	}
	return func() {
		// Unlock on the same connection, even if the sweep's context ended.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var released bool
		if conn.QueryRowContext(uctx, fmt.Sprintf(key, "pg_advisory_unlock"), b.table).Scan(&released) != nil || !released {
			// Returned to the pool, the connection would keep the lock:
			// discard it, which ends the server session and the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}, true, nil
}
