package pgstore_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

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
