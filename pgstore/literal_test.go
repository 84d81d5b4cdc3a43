package pgstore_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// hostile are strings that break naive SQL quoting.
var hostile = []string{
	`'`, `''`, `\`, `\\`, `\'`, `'\`, `\x00`, `\x41`, `E'\n'`, `$$`, `$1`, `$tag$ $$ '; DROP TABLE x; --`,
	`{t}`, `"quoted"`, "tab\tnew\nline\rcr", `{"a":1}`, `\u0000`, `é ü 🔑 \u00e9`, "\u2028\ufeff", `%s %d`, `?`,
	strings.Repeat(`\'`, 100),
}

// literalBackends returns backends on lib/pq connections with
// standard_conforming_strings on and off (lib/pq passes unknown DSN
// settings to the server), sharing one table, in the mode that inlines
// values as literals (WithPreparedStatements; the default's choice when the
// connection is not proven direct).
func literalBackends(t testing.TB) map[string]*pgstore.Backend {
	t.Helper()
	admin := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, admin) + ".sessions"
	out := map[string]*pgstore.Backend{}
	for _, scs := range []string{"on", "off"} {
		db, err := sqlx.Open("postgres", withApp(pgtest.URL(), "pgsession_literal")+"&standard_conforming_strings="+scs)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		var got string
		if err := db.Get(&got, "SHOW standard_conforming_strings"); err != nil || got != scs {
			t.Fatalf("standard_conforming_strings = %q, %v; want %q", got, err, scs)
		}
		b := pgstore.New(db, pgstore.WithTable(table), pgstore.WithPreparedStatements())
		if err := b.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		out["standard_conforming_strings="+scs] = b
	}
	return out
}

// roundTrip stores s as a data key, a data value and the principal, then
// deletes the key by name, and checks each came back exactly.
func roundTrip(t *testing.T, b *pgstore.Backend, s string) {
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

// lib/pq statements carry their values as literals: hostile strings
// round-trip exactly, whatever standard_conforming_strings says.
func TestPostgresLiteralQuoting(t *testing.T) {
	for name, b := range literalBackends(t) {
		t.Run(name, func(t *testing.T) {
			for _, s := range hostile {
				roundTrip(t, b, s)
			}
		})
	}
	// NUL cannot be stored in text: an error, never a truncated value.
	for _, pb := range literalBackends(t) {
		if _, err := pb.ListByPrincipal(context.Background(), "a\x00b"); err == nil || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("principal with NUL: %v, want an error", err)
		}
		if _, err := pb.ListByPrincipal(context.Background(), "\xff"); err == nil {
			t.Error("invalid UTF-8 principal: no error")
		}
	}
}

func FuzzPostgresLiteral(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	backends := literalBackends(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Skip("not storable text")
		}
		for _, b := range backends {
			roundTrip(t, b, s)
		}
	})
}
