package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// janitor runs RunCleanup on its own Manager, on a pool of its own, logging
// at debug level into logs.
type janitor struct {
	db   *sqlx.DB
	m    *pgsession.Manager
	app  string
	logs *pgtest.LogBuffer
	stop context.CancelFunc
	done chan error
}

func newJanitor(t *testing.T, table string, opts ...pgstore.Option) *janitor {
	t.Helper()
	db, app := openPool(t, "pgsession_janitor_")
	b := pgstore.New(db, append([]pgstore.Option{pgstore.WithTable(table)}, opts...)...)
	t.Cleanup(func() { _ = b.Close() })
	j := &janitor{db: db, app: app, logs: &pgtest.LogBuffer{}}
	j.m = newManager(t, pgsession.Config{Backend: b,
		Logger: slog.New(slog.NewTextHandler(j.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return j
}

// start runs the janitor in the background until stopped (or t ends).
func (j *janitor) start(t *testing.T, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	j.stop, j.done = cancel, make(chan error, 1)
	go func() { j.done <- j.m.RunCleanup(ctx, interval) }()
	t.Cleanup(func() { j.halt(t) })
}

// halt stops the janitor and waits for it.
func (j *janitor) halt(t *testing.T) {
	t.Helper()
	if j.stop == nil {
		return
	}
	j.stop()
	select {
	case err := <-j.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RunCleanup returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("RunCleanup did not stop with its context")
	}
	j.stop = nil
}

// waitLog waits until the janitor's log contains s.
func (j *janitor) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(j.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("janitor log never showed %q:\n%s", s, j.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBlocked waits until a statement of the pool named app waits for a lock.
func waitBlocked(t *testing.T, admin *sqlx.DB, app string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for pgtest.Count(t, admin, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no statement of %s is waiting for a lock", app)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// advisoryLocks counts the advisory locks held by the pool named app.
func advisoryLocks(t *testing.T, admin *sqlx.DB, app string) int {
	t.Helper()
	return pgtest.Count(t, admin, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1`, app)
}

// Two instances run the janitor on one table at the same time: while one is
// in the middle of a batch (held there by a stalled DELETE), the other skips
// every round without touching the table, and so does a second janitor of
// the same instance. The lock is released when the sweep ends.
func TestJanitorsNeverOverlap(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	_, table := pgtest.NewBackend(t, "postgres")
	seed(t, table, time.Now(), 2000) // 4,000 expired, 2,000 live
	a, b := newJanitor(t, table), newJanitor(t, table)

	release := stallDeletes(t, admin, table)
	a.start(t, 20*time.Millisecond)
	waitBlocked(t, admin, a.app) // a holds the cleanup lock and waits in its first DELETE
	if n := advisoryLocks(t, admin, a.app); n != 1 {
		t.Fatalf("instance a holds %d advisory locks mid-sweep, want 1", n)
	}

	b.start(t, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.m.RunCleanup(ctx, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) { // same instance, second janitor
		t.Errorf("second janitor of a: %v", err)
	}
	// b has had rounds to skip (on a loaded machine it may need longer
	// than the 200ms above to reach two).
	for deadline := time.Now().Add(5 * time.Second); strings.Count(b.logs.String(), "skipped") < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	b.halt(t)
	if skipped := strings.Count(b.logs.String(), "skipped"); skipped < 2 || strings.Contains(b.logs.String(), "removed=") {
		t.Errorf("instance b swept while a was sweeping (%d rounds skipped):\n%s", skipped, b.logs)
	}
	if n := pgtest.Count(t, admin, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, b.app); n != 0 {
		t.Errorf("instance b has %d statements waiting on the table", n)
	}

	release()
	a.waitLog(t, "removed=4000")
	a.halt(t)
	if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != 2000 {
		t.Errorf("%d rows left, want the 2,000 live ones", n)
	}
	if n := advisoryLocks(t, admin, a.app); n != 0 {
		t.Errorf("instance a still holds %d advisory locks after its sweeps", n)
	}
	if strings.Count(a.logs.String(), "removed=4000") != 1 || strings.Contains(a.logs.String(), "failed") {
		t.Errorf("instance a's log:\n%s", a.logs)
	}

	// Now that a is done, b sweeps (and finds nothing left).
	before := b.logs.String()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_ = b.m.RunCleanup(ctx2, time.Hour)
	if after := strings.TrimPrefix(b.logs.String(), before); !strings.Contains(after, "removed=0") {
		t.Errorf("instance b after a finished:\n%s", after)
	}
}

// The janitor's connection is killed in the middle of a sweep: the sweep is
// logged as failed, the server drops the lock with the connection, and the
// next round sweeps by itself.
func TestJanitorSurvivesKilledConnection(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	_, table := pgtest.NewBackend(t, "postgres")
	seed(t, table, time.Now(), 1000)
	a := newJanitor(t, table)

	release := stallDeletes(t, admin, table)
	a.start(t, 50*time.Millisecond)
	waitBlocked(t, admin, a.app)
	if n := pgtest.Count(t, admin, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, a.app); n == 0 {
		t.Fatal("nothing to terminate")
	}
	a.waitLog(t, "cleanup failed")
	release()
	a.waitLog(t, "removed=2000")
	a.halt(t)
	if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != 1000 {
		t.Errorf("%d rows left, want the 1,000 live ones", n)
	}
	if n := advisoryLocks(t, admin, a.app); n != 0 {
		t.Errorf("%d advisory locks left", n)
	}
}

// A sweep needs a single pool connection: with SetMaxOpenConns(1) it runs on
// the connection that holds the cleanup lock instead of waiting for a second.
func TestJanitorOneConnectionPool(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	_, table := pgtest.NewBackend(t, "postgres")
	seed(t, table, time.Now(), 1500)
	a := newJanitor(t, table, pgstore.WithQueryTimeout(2*time.Second))
	a.db.SetMaxOpenConns(1)
	start := time.Now()
	a.start(t, time.Hour)
	a.waitLog(t, "removed=3000")
	a.halt(t)
	if took := time.Since(start); took > 2*time.Second || strings.Contains(a.logs.String(), "failed") {
		t.Errorf("sweep on a one-connection pool took %v:\n%s", took, a.logs)
	}
	if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != 1500 {
		t.Errorf("%d rows left, want 1,500", n)
	}
}

// DeleteExpired takes no cleanup lock, but calls at the same time are safe:
// they never count a row twice, never fail on each other's row locks, and
// whatever a short batch left behind goes in the next call.
func TestDeleteExpiredConcurrentCalls(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	seed(t, table, time.Now(), 5000) // 10,000 expired
	m := newManager(t, pgsession.Config{Backend: b})
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for i := range counts {
		wg.Go(func() {
			n, err := m.DeleteExpired(context.Background())
			if err != nil {
				t.Errorf("concurrent DeleteExpired: %v", err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	left := pgtest.Count(t, admin, "SELECT count(*) FROM "+table)
	if total+left != 15000 {
		t.Errorf("removed %v (total %d) with %d rows left, want 15,000 rows accounted for", counts, total, left)
	}
	n, err := m.DeleteExpired(context.Background())
	if err != nil || total+n != 10000 {
		t.Errorf("final DeleteExpired = %d, %v after %d", n, err, total)
	}
	t.Logf("concurrent calls removed %v, the next one %d", counts, n)
}
