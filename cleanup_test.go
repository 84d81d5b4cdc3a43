package pgsession_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// seed inserts n sessions per kind into table directly: idle-expired,
// absolutely expired, and live ones (idle 8h, absolute 30 days, at now).
func seed(t *testing.T, table string, now time.Time, n int) {
	t.Helper()
	db := pgtest.Open(t, "postgres")
	_, err := db.Exec(`INSERT INTO `+table+` (key_hash, data, created_at, accessed_at)
		SELECT sha256(convert_to(kind || i, 'UTF8')), '{"a":1}', created, accessed
		FROM generate_series(1, $2) AS i, (VALUES
			('idle', $1::timestamptz - interval '9 hours', $1::timestamptz - interval '8 hours 1 minute'),
			('old',  $1::timestamptz - interval '31 days', $1::timestamptz - interval '1 minute'),
			('live', $1::timestamptz - interval '1 day',   $1::timestamptz - interval '7 hours')
		) AS k(kind, created, accessed)`, now, n)
	if err != nil {
		t.Fatal(err)
	}
}

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

func TestRunCleanupStopsAndLogs(t *testing.T) {
	var logs pgtest.LogBuffer
	env := pgsessiontest.NewEnv(t, pgsession.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	env.Login(t, map[string]any{"a": 1})
	env.Clock.Advance(9 * time.Hour) // idle-expired
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- env.Manager.RunCleanup(ctx, 5*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for env.Manager.Stats().Deletes == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RunCleanup returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunCleanup did not stop with its context")
	}
	if st := env.Manager.Stats(); st.Deletes != 1 || !strings.Contains(logs.String(), "removed=1") {
		t.Errorf("deletes %d, logs %q", st.Deletes, logs.String())
	}
	if err := env.Manager.RunCleanup(context.Background(), 0); !errors.Is(err, pgsession.ErrInvalidConfig) {
		t.Errorf("zero interval: %v", err)
	}
}

// Of several instances sharing a table, only one deletes at a time: while
// another instance is inside a batch (held there by a stalled DELETE), a
// direct DeleteExpiredExclusive reports it busy having removed nothing, and
// a RunCleanup round is skipped; once that batch ends, the lock is free.
func TestCleanupLockAcrossInstances(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	other := pgsession.NewPostgresBackend(pgtest.Open(t, "postgres"), pgsession.WithTable(table)) // another "instance"
	var logs pgtest.LogBuffer
	env := pgsessiontest.NewEnv(t, pgsession.Config{Backend: b,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	seed(t, table, env.Clock.Now(), 10)
	cut := pgsession.Cutoffs{Now: env.Clock.Now(), IdleBefore: env.Clock.Now().Add(-8 * time.Hour), CreatedBefore: env.Clock.Now().Add(-30 * 24 * time.Hour)}

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

// cleanupLocks counts the cleanup locks of table held by any server
// session: advisory locks on the key pair (1886610285, hashtext of the
// quoted "schema"."table").
func cleanupLocks(t *testing.T, table string) int {
	t.Helper()
	table = `"` + strings.Replace(table, ".", `"."`, 1) + `"`
	return pgtest.Count(t, pgtest.Open(t, "postgres"), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND classid::bigint = 1886610285 AND objid::bigint = (hashtext($1)::bigint + 4294967296) % 4294967296`, table)
}
