package pgstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// A table created by pgsession 0.1 (testdata/schema_v0.1.sql, the schema as
// it was) is upgraded in place by Migrate, run by several instances at
// once: no session is lost, each gets its own SessionID, and the new
// features work on old sessions.
func TestMigrateUpgradesV01Table(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	schema := pgtest.Schema(t, db)
	table := schema + ".sessions"
	tx := beginOldTable(t, db, schema, "schema_v0.1.sql")
	now := time.Now().Truncate(time.Millisecond)
	const n = 200
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(strings.Repeat("k", 28) + string(rune('A'+i%26)) + string(rune('a'+i/26)) + "xx")
		h := sha256.Sum256(keys[i])
		principal := any(nil)
		if i%2 == 0 {
			principal = "alice"
		}
		tx.MustExec(`INSERT INTO sessions (key_hash, data, created_at, accessed_at, principal) VALUES ($1, $2, $3, $3, $4)`,
			h[:], `{"i":`+strings.Repeat("1", 1+i%3)+`}`, now, principal)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	concurrently(t, 4, "Migrate of a 0.1 table", func() error {
		return pgstore.New(pgtest.Open(t, "postgres"), pgstore.WithTable(table)).Migrate(context.Background())
	})
	b := pgstore.New(db, pgstore.WithTable(table))
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	if got := pgtest.Count(t, db, `SELECT count(DISTINCT session_id) FROM `+table+` WHERE octet_length(session_id) = 16`); got != n {
		t.Errorf("%d distinct 16-byte session IDs, want %d", got, n)
	}
	for _, key := range keys {
		rec, err := b.Load(context.Background(), backend.ID(sha256.Sum256(key)), backend.SessionID{})
		if err != nil || rec.SessionID == (backend.SessionID{}) || rec.Lifetime != nil || len(rec.Data) != 1 {
			t.Fatalf("old session after the upgrade: %+v, %v", rec, err)
		}
	}
	// The table keeps its primary key (key_hash): an instance of the
	// previous version, still running during a rolling upgrade, names it
	// in ON CONFLICT, and new sessions work beside it.
	if got := pgtest.Count(t, db, `SELECT count(*) FROM pg_constraint WHERE conrelid = '`+table+`'::regclass
		AND contype = 'p' AND pg_get_constraintdef(oid) = 'PRIMARY KEY (key_hash)'`); got != 1 {
		t.Errorf("primary key changed by Migrate: %d constraints PRIMARY KEY (key_hash), want 1", got)
	}
	old := sha256.Sum256([]byte("a session of the previous version"))
	db.MustExec(`INSERT INTO `+table+` (key_hash, data, created_at, accessed_at) VALUES ($1, '{}', now(), now()) ON CONFLICT (key_hash) DO NOTHING`, old[:])
	id, sid, now := randomID(), backend.SessionID{1, 2, 3}, time.Now()
	if err := b.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: id, SessionID: sid, Created: now, Accessed: now,
		Patch: backend.Patch{Set: map[string]json.RawMessage{"n": json.RawMessage("1")}}}); err != nil {
		t.Fatalf("a new session in the upgraded table: %v", err)
	}
	next := randomID()
	if err := b.Apply(context.Background(), backend.Action{Op: backend.OpRotate, Old: id, OldSessionID: sid, New: next, Created: now, Accessed: now}); err != nil {
		t.Fatalf("rotating it: %v", err)
	}
	if rec, err := b.Load(context.Background(), next, sid); err != nil || string(rec.Data["n"]) != "1" {
		t.Fatalf("the rotated session: %+v, %v", rec, err)
	}
	// The new calls work on old sessions.
	list, err := b.ListByPrincipal(context.Background(), "alice")
	if err != nil || len(list) != n/2 {
		t.Fatalf("ListByPrincipal = %d sessions, %v; want %d", len(list), err, n/2)
	}
	if removed, err := b.DeleteByPrincipal(context.Background(), "alice", list[0].SessionID, backend.SessionID{}); err != nil || removed != 1 {
		t.Errorf("deleting one old session by SessionID = %d, %v; want 1", removed, err)
	}
}

// Migrate of a table that is up to date runs no ALTER TABLE: its lock
// would queue every request behind a long transaction that reads the table.
func TestMigrateOfACurrentTableTakesNoTableLock(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	_, table := pgtest.NewBackend(t, "postgres") // migrated once
	reader := db.MustBegin()
	defer func() { _ = reader.Rollback() }()
	reader.MustExec(`SELECT count(*) FROM ` + table)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := pgstore.New(pgtest.Open(t, "postgres"), pgstore.WithTable(table)).Migrate(ctx); err != nil {
		t.Fatalf("Migrate beside an open reader: %v", err)
	}
}

// A table created by pgsession 0.2 (testdata/schema_v0.2.sql, before the
// predecessor columns) is upgraded in place by Migrate, run by several
// instances at once: its sessions load as never rotated, and a rotation
// then records its predecessor.
func TestMigrateUpgradesV02Table(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	schema := pgtest.Schema(t, db)
	table := schema + ".sessions"
	tx := beginOldTable(t, db, schema, "schema_v0.2.sql")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := pgstore.New(db, pgstore.WithTable(table))
	if err := b.Check(ctx); !errors.Is(err, pgstore.ErrSchemaMismatch) {
		t.Fatalf("Check of a 0.2 table: %v, want ErrSchemaMismatch (Migrate needed)", err)
	}
	id, sid, now := randomID(), backend.SessionID{4, 5, 6}, time.Now().Truncate(time.Microsecond)
	db.MustExec(`INSERT INTO `+table+` (key_hash, data, created_at, accessed_at, session_id) VALUES ($1, '{"n":1}', $2, $2, $3)`, id[:], now, sid[:])

	concurrently(t, 4, "Migrate of a 0.2 table", func() error {
		return pgstore.New(pgtest.Open(t, "postgres"), pgstore.WithTable(table)).Migrate(ctx)
	})
	if err := b.Check(ctx); err != nil {
		t.Fatalf("Check after the upgrade: %v", err)
	}
	if n := keyHashChecks(t, db, table); n != 0 {
		t.Fatalf("%d check constraints left after the upgrade, want the key_hash check dropped", n)
	}
	rec, err := b.Load(ctx, id, sid)
	if err != nil || string(rec.Data["n"]) != "1" || !rec.Rotated.IsZero() || rec.Predecessor {
		t.Fatalf("a 0.2 session after the upgrade: %+v, %v", rec, err)
	}
	next, later := randomID(), now.Add(time.Second)
	if err := b.Apply(ctx, backend.Action{Op: backend.OpRotate, Old: id, OldSessionID: sid, New: next, Created: now, Accessed: later, Renewal: true}); err != nil {
		t.Fatalf("rotating it: %v", err)
	}
	rec, err = b.Load(ctx, id, sid)
	if err != nil || !rec.Predecessor || rec.ID != next || !rec.Renewal || !rec.Rotated.Equal(later) {
		t.Fatalf("its predecessor after a rotation: %+v, %v", rec, err)
	}
}

// A table with the current columns and the key_hash check that 0.3 drops
// (the schema before the check went) is not up to date: Migrate drops the
// check, and a second Migrate finds nothing to do.
func TestMigrateDropsKeyHashCheck(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, db) + ".app_sessions"
	ctx := context.Background()
	b := pgstore.New(db, pgstore.WithTable(table))
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := keyHashChecks(t, db, table); n != 0 {
		t.Fatalf("a new table has %d check constraints, want none", n)
	}
	db.MustExec(`ALTER TABLE ` + table + ` ADD CONSTRAINT app_sessions_key_hash_check CHECK (octet_length(key_hash) = 32)`)
	if err := b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := keyHashChecks(t, db, table); n != 0 {
		t.Fatalf("%d check constraints after Migrate, want the key_hash check dropped", n)
	}
	if err := b.Migrate(ctx); err != nil {
		t.Fatalf("Migrate of the table it upgraded: %v", err)
	}
}

// keyHashChecks counts the check constraints of table.
func keyHashChecks(t *testing.T, db *sqlx.DB, table string) int {
	t.Helper()
	return pgtest.Count(t, db, `SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c'`, table)
}
