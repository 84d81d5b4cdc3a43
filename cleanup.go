package pgsession

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"
)

// cleanupBatch is the most rows one cleanup statement removes, so a sweep
// never holds many locks or grows one transaction.
const cleanupBatch = 1000

// CleanupLocker is implemented by backends shared between processes (the
// PostgreSQL backend uses an advisory lock), so that of several instances
// running RunCleanup only one sweeps at a time. A wrapper around such a
// backend should forward it.
type CleanupLocker interface {
	// TryLockCleanup takes the cleanup lock without waiting. It reports false
	// when another holder has it; otherwise unlock releases it.
	TryLockCleanup(ctx context.Context) (unlock func(), ok bool, err error)
}

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
type deleteFunc func(ctx context.Context, idleBefore, createdBefore time.Time, limit int) (int, error)

// deleteExpired is DeleteExpired with the statements run by del.
func (m *Manager) deleteExpired(ctx context.Context, del deleteFunc) (int, error) {
	idleBefore, createdBefore := m.p.cutoffs(m.cfg.Now())
	if idleBefore.IsZero() && createdBefore.IsZero() {
		return 0, nil // no timeouts: nothing ever expires
	}
	total := 0
	for {
		n, err := del(ctx, idleBefore, createdBefore, cleanupBatch)
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
	switch b := m.cfg.Backend.(type) {
	case *PostgresBackend:
		// The whole sweep runs on the connection that holds the lock, so it
		// needs one pool connection, not two: with SetMaxOpenConns(1) its
		// statements would otherwise wait for the lock's own connection.
		conn, ok, err := b.lockCleanup(ctx)
		if err != nil {
			return 0, fmt.Errorf("pgsession: cleanup lock: %w", err)
		}
		if !ok {
			return 0, errSweepBusy
		}
		defer b.unlockCleanup(ctx, conn)
		return m.deleteExpired(ctx, func(ctx context.Context, idleBefore, createdBefore time.Time, limit int) (int, error) {
			return b.deleteExpiredOn(ctx, conn, idleBefore, createdBefore, limit)
		})
	case CleanupLocker:
		unlock, ok, err := b.TryLockCleanup(ctx)
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

// cleanupLockSQL takes or releases the cleanup lock of the table $1: a
// session-level advisory lock whose first key is "pgsm" in ASCII.
const cleanupLockSQL = `SELECT %s(1886610285, hashtext($1))`

// TryLockCleanup implements CleanupLocker with a session-level PostgreSQL
// advisory lock, keyed by the table, held on a pool connection of its own
// until unlock. RunCleanup does not call it on a *PostgresBackend: it runs
// the whole sweep on the locking connection instead.
func (b *PostgresBackend) TryLockCleanup(ctx context.Context) (unlock func(), ok bool, err error) {
	conn, ok, err := b.lockCleanup(ctx)
	if !ok {
		return nil, false, err
	}
	return func() { b.unlockCleanup(ctx, conn) }, true, nil
}

// lockCleanup takes the cleanup lock on a connection of its own, which it
// returns, without waiting for another holder. Getting the connection and
// the lock is bounded by the query timeout.
func (b *PostgresBackend) lockCleanup(ctx context.Context) (*sql.Conn, bool, error) {
	if b.err != nil {
		return nil, false, b.err
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, fmt.Sprintf(cleanupLockSQL, "pg_try_advisory_lock"), b.table).Scan(&ok); err != nil {
		// The lock may have been granted as the call failed (a timeout):
		// discard the connection, which ends its server session and lock.
		discard(conn)
		return nil, false, err
	}
	if !ok {
		_ = conn.Close()
		return nil, false, nil
	}
	return conn, true, nil
}

// unlockCleanup releases the cleanup lock held by conn and returns conn to
// the pool. It runs even if the sweep's context has ended.
func (b *PostgresBackend) unlockCleanup(ctx context.Context, conn *sql.Conn) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var released bool
	if conn.QueryRowContext(uctx, fmt.Sprintf(cleanupLockSQL, "pg_advisory_unlock"), b.table).Scan(&released) != nil || !released {
		// Returned to the pool, the connection would keep the lock and stop
		// every later sweep: discard it, which ends its server session.
		discard(conn)
		return
	}
	_ = conn.Close()
}

// deleteExpiredOn is DeleteExpired run on conn.
func (b *PostgresBackend) deleteExpiredOn(ctx context.Context, conn *sql.Conn, idleBefore, createdBefore time.Time, limit int) (int, error) {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	res, err := conn.ExecContext(ctx, strings.ReplaceAll(sqlDeleteExpired, "{t}", b.table), nullTime(idleBefore), nullTime(createdBefore), limit)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// discard closes conn and drops it from the pool instead of reusing it.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}
