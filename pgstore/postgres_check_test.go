package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// backendCalls runs every call of b that touches the table and returns their
// errors by name.
func backendCalls(b *pgstore.Backend) map[string]error {
	ctx := context.Background()
	now := time.Now()
	_, load := b.Load(ctx, backend.ID{1}, backend.SessionID{})
	_, expired := b.DeleteExpired(ctx, backend.Cutoffs{Now: now, IdleBefore: now, CreatedBefore: now}, 10)
	_, del := b.DeleteByPrincipal(ctx, "ada", backend.SessionID{}, backend.SessionID{})
	_, list := b.ListByPrincipal(ctx, "ada")
	return map[string]error{
		"Load":              load,
		"Apply(insert)":     b.Apply(ctx, backend.Action{Op: backend.OpInsert, New: backend.ID{2}, Created: now, Accessed: now}),
		"Apply(update)":     b.Apply(ctx, backend.Action{Op: backend.OpUpdate, Old: backend.ID{2}, Accessed: now}),
		"DeleteExpired":     expired,
		"DeleteByPrincipal": del,
		"ListByPrincipal":   list,
	}
}

// A missing table (Migrate forgotten) is reported by Check, and by every
// call, as ErrNoTable with the advice to call Migrate or apply Schema.
func TestPostgresMissingTableIsExplained(t *testing.T) {
	for _, driver := range []string{"postgres"} { // pgx: systemtest
		t.Run(driver, func(t *testing.T) {
			db := pgtest.Open(t, driver)
			schema := pgtest.Schema(t, db)
			for _, table := range []string{schema + ".sessions", schema + "_missing.sessions"} {
				b := pgstore.New(db, pgstore.WithTable(table))
				defer b.Close()
				err := b.Check(context.Background())
				if !errors.Is(err, pgstore.ErrNoTable) || !strings.Contains(err.Error(), "call Migrate") || !strings.Contains(err.Error(), "Schema()") {
					t.Errorf("Check of missing %s = %v, want ErrNoTable with the advice", table, err)
				}
				for name, err := range backendCalls(b) {
					if !errors.Is(err, pgstore.ErrNoTable) || !strings.Contains(err.Error(), "call Migrate") {
						t.Errorf("%s on missing %s = %v, want ErrNoTable with the advice", name, table, err)
					}
				}
			}

			// What an application sees: its ErrorHandler gets the advice.
			b := pgstore.New(db, pgstore.WithTable(schema+".sessions"))
			defer b.Close()
			var got error
			m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{exampleKey}, Logger: slog.New(slog.DiscardHandler),
				ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
					got = err
					w.WriteHeader(http.StatusInternalServerError)
				}})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = pgsession.FromContext(r.Context()).Set("user", "ada")
			})).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/login", nil))
			if rec.Code != http.StatusInternalServerError || !errors.Is(got, pgstore.ErrNoTable) || !strings.Contains(got.Error(), "call Migrate") {
				t.Errorf("login without the table: %d, ErrorHandler got %v; want 500 and ErrNoTable with the advice", rec.Code, got)
			}

			// Applying Schema() with one's own tool, then Check, passes.
			if _, err := db.Exec(b.Schema()); err != nil {
				t.Fatal(err)
			}
			if err := b.Check(context.Background()); err != nil {
				t.Errorf("Check after applying Schema() = %v", err)
			}
			for name, err := range backendCalls(b) {
				if err != nil && !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, backend.ErrGone) {
					t.Errorf("%s after applying Schema() = %v", name, err)
				}
			}
		})
	}
}

// A table of the same name and another shape (alexedwards/scs's) is
// reported by Check, and by the calls that meet it, as ErrSchemaMismatch.
func TestPostgresForeignTableIsExplained(t *testing.T) {
	for _, driver := range []string{"postgres"} { // pgx: systemtest
		t.Run(driver, func(t *testing.T) {
			db := pgtest.Open(t, driver)
			schema := pgtest.Schema(t, db)
			if _, err := db.Exec(`CREATE TABLE ` + schema + `.sessions (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			b := pgstore.New(db, pgstore.WithTable(schema+".sessions"))
			defer b.Close()
			err := b.Check(context.Background())
			if !errors.Is(err, pgstore.ErrSchemaMismatch) || !strings.Contains(err.Error(), "token text") {
				t.Errorf("Check of scs's table = %v, want ErrSchemaMismatch naming its columns", err)
			}
			for name, err := range backendCalls(b) {
				if !errors.Is(err, pgstore.ErrSchemaMismatch) || !strings.Contains(err.Error(), "WithTable") {
					t.Errorf("%s on scs's table = %v, want ErrSchemaMismatch with the advice", name, err)
				}
			}
		})
	}
}

// A migrated table passes Check, and Check reports a bad option like every
// other call.
func TestPostgresCheck(t *testing.T) {
	b, _ := pgtest.NewBackend(t, "postgres")
	if err := b.Check(context.Background()); err != nil {
		t.Errorf("Check after Migrate = %v", err)
	}
	bad := pgstore.New(pgtest.Open(t, "postgres"), pgstore.WithTable("a.b.c"))
	if err := bad.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid table name") {
		t.Errorf("Check with a bad table name = %v", err)
	}
}
