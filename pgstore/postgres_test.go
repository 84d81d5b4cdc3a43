package pgstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
	_ "github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
	"github.com/pgsession/pgsession/pgstore"
)

func TestPostgresBackend(t *testing.T) {
	pgtest.Open(t, "postgres") // skip or fail once, not in every subtest
	pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
		b, _ := pgtest.NewBackend(t, "postgres")
		return b
	})
}

// The table holds only SHA-256 hashes of session keys, never a key.
func TestPostgresStoresOnlyKeyHash(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	hashKey := bytes.Repeat([]byte{7}, 32)
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{hashKey}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = pgsession.FromContext(r.Context()).Set("user", "ada")
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var payload []byte
	sc := securecookie.New(hashKey, nil).SetSerializer(securecookie.NopEncoder{})
	if len(resp.Cookies()) != 1 || sc.Decode(m.CookieName(), resp.Cookies()[0].Value, &payload) != nil || len(payload) != 48 {
		t.Fatalf("cookies %v", resp.Cookies())
	}
	sid, key := payload[:16], payload[16:] // the token carries the session ID and the key
	var stored [][]byte
	if err := db.Select(&stored, "SELECT key_hash || session_id FROM "+table); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(key)
	if len(stored) != 1 || !bytes.Equal(stored[0], append(sum[:], sid...)) {
		t.Fatalf("stored %x, want exactly sha256(key) %x and the session ID %x", stored, sum, sid)
	}
	n := pgtest.Count(t, db, "SELECT count(*) FROM "+table+" WHERE position($1::bytea in key_hash) > 0 OR position($2 in data::text) > 0",
		key, base64.RawURLEncoding.EncodeToString(key))
	if n != 0 {
		t.Errorf("the raw key appears in %d rows", n)
	}
}

func TestPostgresMigrateIsIdempotentAndConcurrent(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	table := pgtest.Schema(t, db) + ".sessions"
	b := pgstore.New(db, pgstore.WithTable(table))
	concurrently(t, 8, "concurrent Migrate", func() error { return b.Migrate(context.Background()) })
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if n := pgtest.Count(t, db, "SELECT count(*) FROM pg_indexes WHERE schemaname || '.' || tablename = $1", table); n != 6 {
		t.Errorf("%d indexes, want 6 (primary key, accessed_at, created_at, principal, expires_at, prev_key_hash)", n)
	}
}

// Users migrating from alexedwards/scs have a "sessions" table of another
// shape: Migrate must refuse it, never reuse it.
func TestPostgresMigrateRejectsForeignTable(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	schema := pgtest.Schema(t, db)
	if _, err := db.Exec(`CREATE TABLE ` + schema + `.sessions (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	err := pgstore.New(db, pgstore.WithTable(schema+".sessions")).Migrate(context.Background())
	if !errors.Is(err, pgstore.ErrSchemaMismatch) || !strings.Contains(err.Error(), "token text") || !strings.Contains(err.Error(), "WithTable") {
		t.Fatalf("Migrate on scs's table: %v; want ErrSchemaMismatch naming its columns and the way out", err)
	}
	if n := pgtest.Count(t, db, "SELECT count(*) FROM pg_indexes WHERE schemaname = $1", schema); n != 1 {
		t.Errorf("Migrate touched the foreign table: %d indexes", n)
	}
}

func TestPostgresTableNames(t *testing.T) {
	db := pgtest.Open(t, "postgres")
	for _, bad := range []string{"", ".", "a.", ".b", "a.b.c", strings.Repeat("x", 41), "bad\x00name", "\xff"} {
		b := pgstore.New(db, pgstore.WithTable(bad))
		if err := b.Migrate(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid table name") {
			t.Errorf("WithTable(%q).Migrate = %v, want an invalid table name error", bad, err)
		}
		if _, err := b.Load(context.Background(), backend.ID{}, backend.SessionID{}); err == nil {
			t.Errorf("WithTable(%q).Load succeeded", bad)
		}
	}
	// Names are quoted: odd characters are safe.
	schema := pgtest.Schema(t, db)
	b := pgstore.New(db, pgstore.WithTable(schema+`.Odd "table"; DROP`))
	defer b.Close()
	if err := b.Migrate(context.Background()); err != nil {
		t.Fatalf("odd name: %v", err)
	}
	id := backend.ID{1}
	err := b.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: id,
		Patch: backend.Patch{Replace: true, Set: map[string]json.RawMessage{"a": json.RawMessage("1")}}, Created: time.Now(), Accessed: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(context.Background(), id, backend.SessionID{}); err != nil {
		t.Fatal(err)
	}
}

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// The schema Migrate applies for a custom table, as a golden file, and the
// default one is exactly schema.sql.
func TestPostgresSchemaGolden(t *testing.T) {
	got := pgstore.New(nil, pgstore.WithTable("app.user_sessions")).Schema()
	golden := filepath.Join("testdata", "schema_app_user_sessions.golden.sql")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("schema for app.user_sessions differs from %s (run go test -run SchemaGolden -update):\n%s", golden, got)
	}
	file, err := os.ReadFile("schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	if def := pgstore.New(nil).Schema(); strings.ReplaceAll(def, `"`, "") != strings.ReplaceAll(string(file), `"`, "") {
		t.Errorf("default schema:\n%s", def)
	}
}
