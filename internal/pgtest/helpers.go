package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// Helpers shared by the tests of the root package, pgstore and systemtest.

// RandomID returns a random session ID (the hash of no key in particular).
func RandomID() backend.ID {
	var id backend.ID
	_, _ = rand.Read(id[:])
	return id
}

// RandomName returns prefix and 8 random hexadecimal digits.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// InsertSessions stores n sessions created and accessed at the given times
// and returns their IDs.
func InsertSessions(t testing.TB, b backend.Backend, n int, created, accessed time.Time) []backend.ID {
	t.Helper()
	ids := make([]backend.ID, n)
	for i := range ids {
		ids[i] = RandomID()
		err := b.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: ids[i],
			Patch:   backend.Patch{Replace: true, Set: map[string]json.RawMessage{"i": json.RawMessage(`1`)}},
			Created: created, Accessed: accessed})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// NewManager returns a Manager of cfg with a fixed hash key and, unless cfg
// has one, a logger that discards.
func NewManager(t testing.TB, cfg pgsession.Config) *pgsession.Manager {
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

// WithApp returns url with an application_name, to find this pool's
// server connections in pg_stat_activity.
func WithApp(url, app string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "application_name=" + app
}

// OpenPool opens a lib/pq pool of its own to the test server whose server
// connections carry a fresh application_name, which it returns; closed
// when t ends.
func OpenPool(t testing.TB, prefix string) (*sqlx.DB, string) {
	t.Helper()
	Open(t, "postgres") // skips when there is no server
	app := RandomName(prefix)
	db, err := sqlx.Open("postgres", WithApp(URL(), app))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, app
}

// Seed inserts n sessions per kind into table directly: idle-expired,
// absolutely expired, and live ones (idle 8h, absolute 30 days, at now).
func Seed(t testing.TB, table string, now time.Time, n int) {
	t.Helper()
	db := Open(t, "postgres")
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

// CleanupLocks counts the cleanup locks of table held by any server
// session: advisory locks on the key pair (1886610285, hashtext of the
// quoted "schema"."table").
func CleanupLocks(t testing.TB, table string) int {
	t.Helper()
	table = `"` + strings.Replace(table, ".", `"."`, 1) + `"`
	return Count(t, Open(t, "postgres"), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND classid::bigint = 1886610285 AND objid::bigint = (hashtext($1)::bigint + 4294967296) % 4294967296`, table)
}

// Hostile are strings that break naive SQL quoting.
var Hostile = []string{
	`'`, `''`, `\`, `\\`, `\'`, `'\`, `\x00`, `\x41`, `E'\n'`, `$$`, `$1`, `$tag$ $$ '; DROP TABLE x; --`,
	`{t}`, `"quoted"`, "tab\tnew\nline\rcr", `{"a":1}`, `\u0000`, `é ü 🔑 \u00e9`, "\u2028\ufeff", `%s %d`, `?`,
	strings.Repeat(`\'`, 100),
}

// RoundTrip stores s as a data key, a data value and the principal, then
// deletes the key by name, and checks each came back exactly.
func RoundTrip(t testing.TB, b *pgsession.PostgresBackend, s string) {
	t.Helper()
	ctx := context.Background()
	val, _ := json.Marshal(s)
	id, now := RandomID(), time.Now().Truncate(time.Microsecond)
	err := b.Apply(ctx, backend.Action{Op: backend.OpInsert, New: id, Created: now, Accessed: now,
		Patch:        backend.Patch{Replace: true, Set: map[string]json.RawMessage{s: val, "keep": val}},
		SetPrincipal: true, Principal: s})
	if err != nil {
		t.Fatalf("insert %q: %v", s, err)
	}
	rec, err := b.Load(ctx, id, backend.SessionID{})
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
	if rec, err := b.Load(ctx, id, backend.SessionID{}); err != nil || len(rec.Data) != 1 || rec.Data["keep"] == nil {
		t.Errorf("after deleting key %q: %s, %v", s, rec.Data, err)
	}
	if s == "" {
		return // no principal
	}
	if list, err := b.ListByPrincipal(ctx, s); err != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("ListByPrincipal(%q) = %v, %v; want the one session", s, list, err)
	}
	if n, err := b.DeleteByPrincipal(ctx, s, backend.SessionID{}, backend.SessionID{}); err != nil || n != 1 {
		t.Errorf("DeleteByPrincipal(%q) = %d, %v", s, n, err)
	}
}
