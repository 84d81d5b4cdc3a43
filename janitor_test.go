package pgsession_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// recordingBackend records every DeleteExpired call it forwards.
type recordingBackend struct {
	pgsession.Backend
	mu    sync.Mutex
	calls []deleteCall
}

type deleteCall struct {
	idleBefore, createdBefore time.Time
	limit, removed            int
}

func (b *recordingBackend) DeleteExpired(ctx context.Context, c pgsession.Cutoffs, limit int) (int, error) {
	n, err := b.Backend.DeleteExpired(ctx, c, limit)
	b.mu.Lock()
	b.calls = append(b.calls, deleteCall{c.IdleBefore, c.CreatedBefore, limit, n})
	b.mu.Unlock()
	return n, err
}

func (b *recordingBackend) take() []deleteCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.calls
	b.calls = nil
	return c
}

func randomID() pgsession.ID {
	var id pgsession.ID
	_, _ = rand.Read(id[:])
	return id
}

// insertSessions stores n sessions created and accessed at the given times
// and returns their IDs.
func insertSessions(t *testing.T, b pgsession.Backend, n int, created, accessed time.Time) []pgsession.ID {
	t.Helper()
	ids := make([]pgsession.ID, n)
	for i := range ids {
		ids[i] = randomID()
		err := b.Apply(context.Background(), pgsession.Action{Op: pgsession.OpInsert, New: ids[i],
			Patch:   pgsession.Patch{Replace: true, Set: map[string]json.RawMessage{"i": json.RawMessage(`1`)}},
			Created: created, Accessed: accessed})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func newManager(t *testing.T, cfg pgsession.Config) *pgsession.Manager {
	t.Helper()
	cfg.HashKeys = [][]byte{make([]byte, 32)}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := pgsession.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// DeleteExpired works in statements of at most 1,000 rows and stops at the
// first short one.
func TestDeleteExpiredBatches(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := &recordingBackend{Backend: pgsession.NewMemoryBackend()}
	m := newManager(t, pgsession.Config{Backend: b, IdleTimeout: time.Hour, AbsoluteTimeout: 24 * time.Hour,
		TimeoutResolution: time.Minute, Now: func() time.Time { return now }})
	live := insertSessions(t, b, 100, now.Add(-23*time.Hour), now.Add(-59*time.Minute))

	for _, tc := range []struct {
		expired int
		batches []int
	}{
		{2500, []int{1000, 1000, 500}},
		{2000, []int{1000, 1000, 0}},
		{999, []int{999}},
		{0, []int{0}},
	} {
		dead := insertSessions(t, b, tc.expired, now.Add(-2*time.Hour), now.Add(-61*time.Minute))
		n, err := m.DeleteExpired(context.Background())
		if err != nil || n != tc.expired {
			t.Fatalf("%d expired: DeleteExpired = %d, %v", tc.expired, n, err)
		}
		var got []int
		for _, c := range b.take() {
			if c.limit != 1000 || !c.idleBefore.Equal(now.Add(-time.Hour)) || !c.createdBefore.Equal(now.Add(-24*time.Hour)) {
				t.Errorf("call %+v: want limit 1000 and cutoffs now-1h, now-24h", c)
			}
			got = append(got, c.removed)
		}
		if !equalInts(got, tc.batches) {
			t.Errorf("%d expired: batches %v, want %v", tc.expired, got, tc.batches)
		}
		for _, id := range dead {
			if _, err := b.Load(context.Background(), id, pgsession.SessionID{}); !errors.Is(err, pgsession.ErrNotFound) {
				t.Fatalf("expired session %s survived: %v", id, err)
			}
		}
	}
	for _, id := range live {
		if _, err := b.Load(context.Background(), id, pgsession.SessionID{}); err != nil {
			t.Fatalf("live session %s: %v", id, err)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A disabled timeout is no bound; with both disabled only sessions with a
// lifetime of their own can expire, so these survive.
func TestDeleteExpiredDisabledTimeouts(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	b := &recordingBackend{Backend: pgsession.NewMemoryBackend()}
	insertSessions(t, b, 3, now.Add(-1000*time.Hour), now.Add(-1000*time.Hour))

	m := newManager(t, pgsession.Config{Backend: b, IdleTimeout: -1, AbsoluteTimeout: -1, Now: clock})
	if n, err := m.DeleteExpired(context.Background()); n != 0 || err != nil {
		t.Errorf("no timeouts: DeleteExpired = %d, %v", n, err)
	}
	if c := b.take(); len(c) != 1 || !c[0].idleBefore.IsZero() || !c[0].createdBefore.IsZero() {
		t.Errorf("no timeouts: calls %+v, want one without bounds", c)
	}
	m = newManager(t, pgsession.Config{Backend: b, IdleTimeout: -1, AbsoluteTimeout: time.Hour, Now: clock})
	if _, err := m.DeleteExpired(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := b.take(); len(c) != 1 || !c[0].idleBefore.IsZero() || !c[0].createdBefore.Equal(now.Add(-time.Hour)) || c[0].removed != 3 {
		t.Errorf("absolute timeout only: calls %+v", c)
	}
}

// A session exactly at its idle timeout is already expired for requests but
// survives a sweep (it goes in the next one); a microsecond older, it is
// removed. Cleanup is never ahead of the policy, at PostgreSQL's precision.
func TestDeleteExpiredBoundaryPostgres(t *testing.T) {
	b, _ := pgtest.NewBackend(t, "postgres")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := newManager(t, pgsession.Config{Backend: b, IdleTimeout: time.Hour, AbsoluteTimeout: -1,
		TimeoutResolution: time.Minute, Now: func() time.Time { return now }})
	at := insertSessions(t, b, 1, now, now.Add(-time.Hour))[0]
	older := insertSessions(t, b, 1, now, now.Add(-time.Hour-time.Microsecond))[0]
	newer := insertSessions(t, b, 1, now, now.Add(-time.Hour+time.Microsecond))[0]
	if n, err := m.DeleteExpired(context.Background()); n != 1 || err != nil {
		t.Fatalf("DeleteExpired = %d, %v; want 1", n, err)
	}
	for id, want := range map[pgsession.ID]error{at: nil, newer: nil, older: pgsession.ErrNotFound} {
		if _, err := b.Load(context.Background(), id, pgsession.SessionID{}); !errors.Is(err, want) {
			t.Errorf("Load: %v, want %v", err, want)
		}
	}
}

// openPool opens a pool of its own whose server connections carry a fresh
// application_name, which it returns.
func openPool(t *testing.T, prefix string) (*sqlx.DB, string) {
	t.Helper()
	pgtest.Open(t, "postgres") // skips when there is no server
	app := randomName(prefix)
	db, err := sqlx.Open("postgres", withApp(pgtest.URL(), app))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, app
}

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

func newJanitor(t *testing.T, table string, opts ...pgsession.PostgresOption) *janitor {
	t.Helper()
	db, app := openPool(t, "pgsession_janitor_")
	b := pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
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

// stallDeletes makes every DELETE on table wait, row by row, until the
// returned function is called: a BEFORE DELETE trigger waits for an
// advisory lock (a random key) that the test holds. A batch of the cleanup
// so stalls inside its statement, holding the cleanup lock.
func stallDeletes(t *testing.T, admin *sqlx.DB, table string) (release func()) {
	t.Helper()
	var key int64
	if err := admin.Get(&key, `SELECT (random() * 1e15)::bigint`); err != nil {
		t.Fatal(err)
	}
	schema, _, _ := strings.Cut(table, ".")
	fn := schema + ".stall_deletes"
	if _, err := admin.Exec(fmt.Sprintf(`CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(%d); RETURN OLD; END $$;
		CREATE TRIGGER stall_deletes BEFORE DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()`, fn, key, table, fn)); err != nil {
		t.Fatal(err)
	}
	tx, err := admin.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock($1)`, key); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback() }) }
	t.Cleanup(release)
	return release
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
	a := newJanitor(t, table, pgsession.WithQueryTimeout(2*time.Second))
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
