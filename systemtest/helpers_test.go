package systemtest_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
)

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

// cleanupLocks counts the cleanup locks of table held by any server
// session: advisory locks on the key pair (1886610285, hashtext of the
// quoted "schema"."table").
func cleanupLocks(t *testing.T, table string) int {
	t.Helper()
	table = `"` + strings.Replace(table, ".", `"."`, 1) + `"`
	return pgtest.Count(t, pgtest.Open(t, "postgres"), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND classid::bigint = 1886610285 AND objid::bigint = (hashtext($1)::bigint + 4294967296) % 4294967296`, table)
}

// hostile are strings that break naive SQL quoting.
var hostile = []string{
	`'`, `''`, `\`, `\\`, `\'`, `'\`, `\x00`, `\x41`, `E'\n'`, `$$`, `$1`, `$tag$ $$ '; DROP TABLE x; --`,
	`{t}`, `"quoted"`, "tab\tnew\nline\rcr", `{"a":1}`, `\u0000`, `é ü 🔑 \u00e9`, "\u2028\ufeff", `%s %d`, `?`,
	strings.Repeat(`\'`, 100),
}

// roundTrip stores s as a data key, a data value and the principal, then
// deletes the key by name, and checks each came back exactly.
func roundTrip(t *testing.T, b *pgsession.PostgresBackend, s string) {
	t.Helper()
	ctx := context.Background()
	val, _ := json.Marshal(s)
	id, now := randomID(), time.Now().Truncate(time.Microsecond)
	err := b.Apply(ctx, backend.Action{Op: backend.OpInsert, New: id, Created: now, Accessed: now,
		Patch:        backend.Patch{Replace: true, Set: map[string]json.RawMessage{s: val, "keep": val}},
		SetPrincipal: true, Principal: s})
	if err != nil {
		t.Fatalf("insert %q: %v", s, err)
	}
	rec, err := b.Load(ctx, id, pgsession.SessionID{})
	if err != nil {
		t.Fatalf("load %q: %v", s, err)
	}
	var got string
	if err := json.Unmarshal(rec.Data[s], &got); err != nil || got != s || !rec.Created.Equal(now) {
		t.Errorf("stored %q, loaded %s (%v) created %v", s, rec.Data, err, rec.Created)
	}
	if err := b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: id, Patch: backend.Patch{Delete: []string{s, s + "x"}}}); err != nil {
		t.Fatalf("delete key %q: %v", s, err)
	}
	if rec, err := b.Load(ctx, id, pgsession.SessionID{}); err != nil || len(rec.Data) != 1 || rec.Data["keep"] == nil {
		t.Errorf("after deleting key %q: %s, %v", s, rec.Data, err)
	}
	if s == "" {
		return // no principal
	}
	if list, err := b.ListByPrincipal(ctx, s); err != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("ListByPrincipal(%q) = %v, %v; want the one session", s, list, err)
	}
	if n, err := b.DeleteByPrincipal(ctx, s, pgsession.SessionID{}, pgsession.SessionID{}); err != nil || n != 1 {
		t.Errorf("DeleteByPrincipal(%q) = %d, %v", s, n, err)
	}
}
