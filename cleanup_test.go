package pgsession_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// recordingBackend records every DeleteExpired call it forwards.
type recordingBackend struct {
	backend.Backend
	mu    sync.Mutex
	calls []deleteCall
}

type deleteCall struct {
	idleBefore, createdBefore time.Time
	limit, removed            int
}

func (b *recordingBackend) DeleteExpired(ctx context.Context, c backend.Cutoffs, limit int) (int, error) {
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
			if _, err := b.Load(context.Background(), id, pgsession.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
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
