package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
	"github.com/pgsession/pgsession/pgstore"
)

// The conformance suite passes with prepared statements on a direct
// connection.
func TestPreparedStatements(t *testing.T) {
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackend(t, "postgres", pgstore.WithPreparedStatements())
		return b
	})
}

// loadMissingThrice migrates a backend with opts on a pool of one server
// connection (so a test can look at that connection's statements), and
// loads three missing sessions through it.
func loadMissingThrice(t *testing.T, opts ...pgstore.Option) (*sqlx.DB, *pgstore.Backend) {
	t.Helper()
	direct := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, direct) + ".sessions"
	db, err := sqlx.Open("postgres", pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1)
	b := pgstore.New(db, append([]pgstore.Option{pgstore.WithTable(table)}, opts...)...)
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := b.Load(context.Background(), randomID(), backend.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("Load of a missing session = %v, want ErrNotFound", err)
		}
	}
	return db, b
}

// The statements really are prepared: after a Load, the server connection
// holds a pgsession_ statement, and the next Load runs it.
func TestPreparedStatementsArePrepared(t *testing.T) {
	db, _ := loadMissingThrice(t, pgstore.WithPreparedStatements())
	var names []string
	if err := db.Select(&names, `SELECT name FROM pg_prepared_statements WHERE name LIKE 'pgsession\_%'`); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 {
		t.Errorf("prepared on the connection: %q, want one pgsession_ statement", names)
	}
	var calls int
	if err := db.Get(&calls, `SELECT COALESCE(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements WHERE name LIKE 'pgsession\_%'`); err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Errorf("the prepared statement ran %d times, want 3", calls)
	}
}

// The conformance suite passes with the driver's prepared statements on a
// direct connection.
func TestDriverPreparedStatements(t *testing.T) {
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackend(t, "postgres", pgstore.WithDriverPreparedStatements())
		return b
	})
}

// With WithDriverPreparedStatements the driver really prepares the
// statement: after three Loads, the connection holds one prepared SELECT of
// the table, run three times with its value as a parameter, and no
// pgsession_ statement of the other mode. Close closes it on the connection.
func TestDriverPreparedStatementsArePrepared(t *testing.T) {
	db, b := loadMissingThrice(t, pgstore.WithPreparedStatements(), pgstore.WithDriverPreparedStatements())
	ctx := context.Background()
	type stmt struct {
		Name  string
		Text  string `db:"statement"`
		Calls int
	}
	list := func() []stmt {
		var stmts []stmt
		if err := db.Select(&stmts, `SELECT name, statement, generic_plans + custom_plans AS calls FROM pg_prepared_statements`); err != nil {
			t.Fatal(err)
		}
		return stmts
	}
	stmts := list()
	if len(stmts) != 1 || strings.HasPrefix(stmts[0].Name, "pgsession_") || !strings.Contains(stmts[0].Text, "WHERE key_hash = $1") || stmts[0].Calls != 3 {
		t.Errorf("prepared on the connection: %+v, want the driver's one SELECT with a parameter, run 3 times", stmts)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if stmts := list(); len(stmts) != 0 {
		t.Errorf("after Close, prepared on the connection: %+v, want none", stmts)
	}
	if _, err := b.Load(ctx, randomID(), backend.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Load after Close = %v, want ErrNotFound (prepared again)", err)
	}
}

// A statement the driver cannot prepare says so, with the backend's advice.
func TestDriverPreparedStatementsErrorsAreExplained(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b := pgstore.New(db, pgstore.WithTable(pgtest.Schema(t, db)+".sessions"), pgstore.WithDriverPreparedStatements())
	for range 2 { // the failed statement is not kept
		_, err := b.Load(context.Background(), randomID(), backend.SessionID{})
		if !errors.Is(err, pgstore.ErrNoTable) || !strings.Contains(err.Error(), "call Migrate") {
			t.Errorf("Load from a missing table = %v, want ErrNoTable with the advice", err)
		}
	}
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(context.Background(), randomID(), backend.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Load after Migrate = %v, want ErrNotFound", err)
	}
}

// Through PgBouncer in transaction mode the option stays correct: the
// conformance suite passes.
func TestPreparedStatementsPgBouncer(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	db := bouncer.Open(t, "postgres", "")
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackendOn(t, db, pgstore.WithPreparedStatements())
		return b
	})
}

// The failure that prepared statements named by lib/pq's per-connection
// counter cause behind a transaction pooler (a statement name resolving to
// another statement of this library on the server connection the pooler
// picked: a logout answering success with nothing deleted) cannot happen:
// two backends (two tables, so every statement differs) share PgBouncer's
// ten server connections with 24 clients inserting, loading and deleting;
// every call must do exactly what it was asked.
func TestPreparedStatementsPgBouncerNeverRunsAnotherStatement(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	db := bouncer.Open(t, "postgres", "")
	db.SetMaxOpenConns(24)
	var backends [2]*pgstore.Backend
	for i := range backends {
		backends[i], _ = pgtest.NewBackendOn(t, db, pgstore.WithPreparedStatements())
	}
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for c := range 24 {
		wg.Go(func() {
			b, other := backends[c%2], backends[1-c%2]
			for i := 0; i < 40 && time.Now().Before(deadline); i++ {
				id := randomID()
				now := time.Now()
				ins := backend.Action{Op: backend.OpInsert, New: id, Created: now, Accessed: now,
					Patch: backend.Patch{Set: map[string]json.RawMessage{"c": {'0' + byte(c%10)}}}}
				if err := b.Apply(ctx, ins); err != nil {
					t.Errorf("client %d: insert: %v", c, err)
					return
				}
				if _, err := other.Load(ctx, id, backend.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
					t.Errorf("client %d: the other table has the session: %v", c, err)
				}
				rec, err := b.Load(ctx, id, backend.SessionID{})
				if err != nil || string(rec.Data["c"]) != string([]byte{'0' + byte(c%10)}) {
					t.Errorf("client %d: load = %v, %v", c, rec, err)
				}
				if err := b.Apply(ctx, backend.Action{Op: backend.OpDelete, Old: id}); err != nil {
					t.Errorf("client %d: delete: %v", c, err)
				}
				if _, err := b.Load(ctx, id, backend.SessionID{}); !errors.Is(err, backend.ErrNotFound) {
					t.Errorf("client %d: after the delete, load = %v, want ErrNotFound (the delete ran another statement)", c, err)
				}
			}
		})
	}
	wg.Wait()
}

// A statement the server cannot run says so, with the backend's advice,
// in prepared mode too.
func TestPreparedStatementsErrorsAreExplained(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b := pgstore.New(db, pgstore.WithTable(pgtest.Schema(t, db)+".sessions"), pgstore.WithPreparedStatements())
	_, err := b.Load(context.Background(), randomID(), backend.SessionID{})
	if !errors.Is(err, pgstore.ErrNoTable) || !strings.Contains(err.Error(), "call Migrate") {
		t.Errorf("Load from a missing table = %v, want ErrNoTable with the advice", err)
	}
}

// The Go side of one Load, per statement mode (instructions per call are
// counted with valgrind --tool=callgrind on this loop; see the README):
//
//	go test -run '^$' -bench BenchmarkBackendLoad -benchmem
func BenchmarkBackendLoad(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []pgstore.Option
	}{
		{"default", nil},
		{"prepared", []pgstore.Option{pgstore.WithPreparedStatements()}},
		{"driver", []pgstore.Option{pgstore.WithDriverPreparedStatements()}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			store, _ := pgtest.NewBackend(b, "postgres", mode.opts...)
			id := randomID()
			now := time.Now()
			ctx := context.Background()
			if err := store.Apply(ctx, backend.Action{Op: backend.OpInsert, New: id, Created: now, Accessed: now,
				Patch: backend.Patch{Set: map[string]json.RawMessage{"n": json.RawMessage("1")}}}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := store.Load(ctx, id, backend.SessionID{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
