package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
	"github.com/pgsession/pgsession/pgstore"
)

func TestDeleteExpiredPostgres(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: b})
	seed(t, table, env.Clock.Now(), 2500)

	n, err := env.Manager.DeleteExpired(context.Background())
	if err != nil || n != 5000 {
		t.Fatalf("DeleteExpired = %d, %v; want 5000", n, err)
	}
	if left := pgtest.Count(t, db, "SELECT count(*) FROM "+table); left != 2500 {
		t.Errorf("%d rows left, want the 2500 live ones", left)
	}
	if live := pgtest.Count(t, db, "SELECT count(*) FROM "+table+" WHERE created_at > $1", env.Clock.Now().Add(-2*24*time.Hour)); live != 2500 {
		t.Errorf("%d live rows left, want 2500", live)
	}
	if n, err := env.Manager.DeleteExpired(context.Background()); err != nil || n != 0 {
		t.Errorf("second DeleteExpired = %d, %v", n, err)
	}
	// A cancelled context stops it with an error, not a panic.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := env.Manager.DeleteExpired(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("with a cancelled context: %v", err)
	}
}

// Of several instances sharing a table, only one deletes at a time: while
// another instance is inside a batch (held there by a stalled DELETE), a
// direct DeleteExpiredExclusive reports it busy having removed nothing, and
// a RunCleanup round is skipped; once that batch ends, the lock is free.
func TestCleanupLockAcrossInstances(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	other := pgstore.New(pgtest.Open(t, "postgres"), pgstore.WithTable(table)) // another "instance"
	var logs pgtest.LogBuffer
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: b,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	seed(t, table, env.Clock.Now(), 10)
	cut := backend.Cutoffs{Now: env.Clock.Now(), IdleBefore: env.Clock.Now().Add(-8 * time.Hour), CreatedBefore: env.Clock.Now().Add(-30 * 24 * time.Hour)}

	release := stallDeletes(t, db, table)
	type result struct {
		n   int
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, ok, err := other.DeleteExpiredExclusive(context.Background(), cut, 5)
		done <- result{n, ok, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for cleanupLocks(t, table) == 0 {
		if time.Now().After(deadline) {
			release()
			r := <-done
			t.Fatalf("the other instance never took the cleanup lock: %v", r.err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, ok, err := b.DeleteExpiredExclusive(context.Background(), cut, 100); ok || n != 0 || err != nil {
		t.Errorf("while another instance deletes: DeleteExpiredExclusive = %d, %v, %v; want 0, busy", n, ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = env.Manager.RunCleanup(ctx, time.Hour) // one round, then the context ends
	if n := pgtest.Count(t, db, "SELECT count(*) FROM "+table); n != 30 || !strings.Contains(logs.String(), "skipped") {
		t.Fatalf("swept while another instance held the lock: logs %q", logs.String())
	}
	release()
	r := <-done
	if r.err != nil || !r.ok || r.n != 5 {
		t.Fatalf("the other instance's batch: %+v, want 5 removed", r)
	}
	if n := cleanupLocks(t, table); n != 0 {
		t.Errorf("%d advisory locks left after the batch", n)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	_ = env.Manager.RunCleanup(ctx2, time.Hour)
	if n := pgtest.Count(t, db, "SELECT count(*) FROM "+table); n != 10 || !strings.Contains(logs.String(), "removed=15") {
		t.Errorf("after the other batch ended: %d rows, want the 10 live ones; logs %q", n, logs.String())
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
	for id, want := range map[backend.ID]error{at: nil, newer: nil, older: backend.ErrNotFound} {
		if _, err := b.Load(context.Background(), id, backend.SessionID{}); !errors.Is(err, want) {
			t.Errorf("Load: %v, want %v", err, want)
		}
	}
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
