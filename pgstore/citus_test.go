package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
	"github.com/pgsession/pgsession/pgstore"
)

// The tests in this file run against a Citus coordinator given by
// PGSESSION_CITUS_URL (for example
// postgres://postgres@127.0.0.1:9700/postgres?sslmode=disable), each on a
// table of its own, distributed by Distribute. Without it they skip.

var (
	citusMu sync.Mutex
	citusDB *sqlx.DB
)

// openCitus returns the pool on the Citus coordinator, skipping t when
// PGSESSION_CITUS_URL is not set.
func openCitus(t testing.TB) *sqlx.DB {
	t.Helper()
	url := os.Getenv("PGSESSION_CITUS_URL")
	if url == "" {
		t.Skip("PGSESSION_CITUS_URL not set: Citus tests SKIPPED")
	}
	citusMu.Lock()
	defer citusMu.Unlock()
	if citusDB == nil {
		db, err := sqlx.Open("postgres", url)
		if err == nil {
			err = db.Ping()
		}
		if err != nil {
			t.Fatalf("Citus coordinator at PGSESSION_CITUS_URL: %v", err)
		}
		citusDB = db
	}
	return citusDB
}

// newCitusBackend returns a backend whose table, in a schema of its own,
// is distributed by Distribute, and the table's name.
func newCitusBackend(t testing.TB, opts ...pgstore.Option) (*pgstore.Backend, string) {
	t.Helper()
	db := openCitus(t)
	table := pgtest.Schema(t, db) + ".sessions"
	b := pgstore.New(db, append([]pgstore.Option{pgstore.WithTable(table)}, opts...)...)
	if err := b.Distribute(context.Background()); err != nil {
		t.Fatalf("Distribute: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, table
}

// The conformance suite on a distributed table, in every statement mode.
func TestCitusBackend(t *testing.T) {
	openCitus(t)
	for name, opts := range map[string][]pgstore.Option{
		"default":  nil,
		"prepared": {pgstore.WithPreparedStatements()},
		"driver":   {pgstore.WithDriverPreparedStatements()},
	} {
		t.Run(name, func(t *testing.T) {
			pgsessiontest.TestBackend(t, func(t *testing.T) backend.Backend {
				b, _ := newCitusBackend(t, opts...)
				return b
			})
		})
	}
}

// Distribute is idempotent, Migrate and Check keep working on the
// distributed table, and every statement on one session is routed to one
// shard.
func TestCitusDistribute(t *testing.T) {
	db := openCitus(t)
	b, table := newCitusBackend(t)
	ctx := context.Background()
	for _, step := range []func(context.Context) error{b.Distribute, b.Migrate, b.Check} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var column string
	if err := db.Get(&column, `SELECT column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition WHERE logicalrelid = $1::regclass`, table); err != nil || column != "session_id" {
		t.Fatalf("distribution column %q, %v; want session_id", column, err)
	}
	key, sid := `'\x`+strings.Repeat("ab", 32)+`'::bytea`, `'\x`+strings.Repeat("cd", 16)+`'::bytea`
	for _, stmt := range []string{
		`SELECT data FROM ` + table + ` WHERE key_hash = ` + key + ` AND session_id = ` + sid,
		`UPDATE ` + table + ` SET key_hash = ` + key + ` WHERE key_hash = ` + key + ` AND session_id = ` + sid,
		`DELETE FROM ` + table + ` WHERE key_hash = ` + key + ` AND session_id = ` + sid,
	} {
		var plan []string
		if err := db.Select(&plan, `EXPLAIN (COSTS OFF) `+stmt); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(plan, "\n"), "Task Count: 1\n") {
			t.Errorf("%s runs on more than one shard:\n%s", stmt, strings.Join(plan, "\n"))
		}
	}
}

// A 0.1 table upgraded by Migrate (several instances at once) is then
// distributed with its sessions, which keep loading.
func TestCitusDistributeUpgradedTable(t *testing.T) {
	db := openCitus(t)
	schema := pgtest.Schema(t, db)
	table := schema + ".sessions"
	tx := beginOldTable(t, db, schema, "schema_v0.1.sql")
	tx.MustExec(`INSERT INTO sessions (key_hash, data, created_at, accessed_at, principal)
		SELECT sha256(g::text::bytea), '{"a":1}', now(), now(), 'alice' FROM generate_series(1, 100) g`)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	concurrently(t, 3, "Distribute of a 0.1 table", func() error {
		return pgstore.New(db, pgstore.WithTable(table)).Distribute(context.Background())
	})
	b := pgstore.New(db, pgstore.WithTable(table))
	list, err := b.ListByPrincipal(context.Background(), "alice")
	if err != nil || len(list) != 100 {
		t.Fatalf("ListByPrincipal = %d, %v; want 100", len(list), err)
	}
	var key []byte
	if err := db.Get(&key, `SELECT key_hash FROM `+table+` LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(context.Background(), backend.ID(key), backend.SessionID{}); err != nil {
		t.Errorf("a session of the 0.1 table, by key hash alone: %v", err)
	}
	if n := pgtest.Count(t, db, `SELECT pg_relation_size($1::regclass)`, table); n != 0 {
		t.Errorf("%d bytes left in the coordinator's own table", n)
	}
}

// Cleanup on a distributed table: bounded batches, expired rows only, and
// the cleanup lock excludes a second cleaner.
func TestCitusCleanup(t *testing.T) {
	db := openCitus(t)
	b, table := newCitusBackend(t)
	ctx := context.Background()
	now := time.Now()
	db.MustExec(`INSERT INTO `+table+` (key_hash, data, created_at, accessed_at, session_id)
		SELECT sha256(g::text::bytea), '{}', $1::timestamptz, CASE WHEN g % 2 = 0 THEN $1::timestamptz ELSE $2::timestamptz END, uuid_send(gen_random_uuid())
		FROM generate_series(1, 50) g`, now.Add(-48*time.Hour), now)
	cut := backend.Cutoffs{Now: now, IdleBefore: now.Add(-time.Hour)}
	n, ok, err := b.DeleteExpiredExclusive(ctx, cut, 10)
	if err != nil || !ok || n != 10 {
		t.Fatalf("DeleteExpiredExclusive = %d, %v, %v; want 10 removed", n, ok, err)
	}
	// Another cleaner holds the lock: nothing removed, not ok.
	tx := db.MustBegin()
	defer func() { _ = tx.Rollback() }()
	schema, _, _ := strings.Cut(table, ".")
	tx.MustExec(`SELECT pg_advisory_xact_lock(1886610285, hashtext($1))`, pq.QuoteIdentifier(schema)+"."+pq.QuoteIdentifier("sessions"))
	if n, ok, err := b.DeleteExpiredExclusive(ctx, cut, 10); err != nil || ok || n != 0 {
		t.Errorf("beside a held cleanup lock: %d, %v, %v; want 0, false", n, ok, err)
	}
	_ = tx.Rollback()
	total := 10
	for {
		n, err := b.DeleteExpired(ctx, cut, 7)
		if err != nil {
			t.Fatal(err)
		}
		if total += n; n < 7 {
			break
		}
	}
	if total != 25 || pgtest.Count(t, db, `SELECT count(*) FROM `+table) != 25 {
		t.Errorf("removed %d, %d rows left; want 25 and 25", total, pgtest.Count(t, db, `SELECT count(*) FROM `+table))
	}
}

// End to end through the middleware on a distributed table: anonymous
// sessions, logins with rotation, data writes, logouts, and "log out
// everywhere" and "sign out this device" racing rotations.
func TestCitusEndToEnd(t *testing.T) {
	db := openCitus(t)
	b, table := newCitusBackend(t)
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{[]byte(strings.Repeat("k", 32))},
		PrincipalKey: "user", Cookie: pgsession.CookieConfig{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		q := r.URL.Query()
		var err error
		switch q.Get("op") {
		case "visit":
			err = s.Set("visited", true)
		case "login":
			if err = s.Set("user", q.Get("u")); err == nil {
				err = pgsession.RotateKey(r.Context())
			}
		case "inc":
			var n int
			if _, err = s.Get("n", &n); err == nil {
				err = s.Set("n", n+1)
			}
		case "get":
			var user string
			var n int
			if _, err = s.Get("user", &user); err == nil {
				_, err = s.Get("n", &n)
			}
			fmt.Fprintf(w, "%s %d", user, n)
		case "rotate":
			err = pgsession.RotateKey(r.Context())
		case "logout":
			err = s.Clear()
		case "id":
			list, _ := m.ListByPrincipal(r.Context(), q.Get("u"))
			for _, info := range list {
				if info.Current {
					fmt.Fprint(w, info.ID)
				}
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	defer srv.Close()
	do := func(cookie, query string) (status int, body, set string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/?"+query, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", ""
		}
		defer resp.Body.Close()
		bb, _ := io.ReadAll(resp.Body)
		set = cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == m.CookieName() {
				set = ""
				if ck.MaxAge >= 0 {
					set = ck.Name + "=" + ck.Value
				}
			}
		}
		return resp.StatusCode, string(bb), set
	}

	// 50 sessions, 20 requests each.
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", i)
			_, _, anon := do("", "op=visit")
			status, _, ck := do(anon, "op=login&u="+user)
			if status != 200 || ck == anon || ck == "" {
				t.Errorf("%s login: %d, cookie kept %v", user, status, ck == anon)
				return
			}
			if _, body, _ := do(anon, "op=get"); body != " 0" {
				t.Errorf("%s: the pre-login cookie still loads: %q", user, body)
			}
			for range 15 {
				if status, _, _ := do(ck, "op=inc"); status != 200 {
					t.Errorf("%s inc: %d", user, status)
				}
			}
			if _, body, _ := do(ck, "op=get"); body != user+" 15" {
				t.Errorf("%s get = %q, want %q", user, body, user+" 15")
			}
			if i%2 == 0 {
				if _, _, set := do(ck, "op=logout"); set != "" {
					t.Errorf("%s logout left a cookie", user)
				}
				if _, body, _ := do(ck, "op=get"); body != " 0" {
					t.Errorf("%s: the logged-out cookie still loads: %q", user, body)
				}
			}
		})
	}
	wg.Wait()
	if n := pgtest.Count(t, db, `SELECT count(*) FROM `+table); n != 25 {
		t.Errorf("%d rows after the logins and logouts, want 25", n)
	}

	// Log out everywhere, and sign out one device, racing rotations.
	for round := range 10 {
		user := fmt.Sprintf("racer%d", round)
		devices := make([]string, 4)
		for d := range devices {
			_, _, devices[d] = do("", "op=login&u="+user)
		}
		_, target, _ := do(devices[0], "op=id&u="+user)
		id, err := pgsession.ParseSessionID(target)
		if err != nil {
			t.Fatalf("device ID %q: %v", target, err)
		}
		var rot sync.WaitGroup
		stop := make(chan struct{})
		var mu sync.Mutex
		for d := range devices {
			rot.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					ck := devices[d]
					mu.Unlock()
					if _, _, set := do(ck, "op=rotate"); set != "" && set != ck {
						mu.Lock()
						devices[d] = set
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		var deleted int
		if round%2 == 0 {
			deleted, err = m.DeleteByPrincipal(context.Background(), user)
		} else {
			var ok bool
			ok, err = m.DeleteSession(context.Background(), user, id)
			deleted = map[bool]int{true: 1}[ok]
		}
		time.Sleep(20 * time.Millisecond)
		close(stop)
		rot.Wait()
		if err != nil || deleted == 0 {
			t.Fatalf("round %d: deleted %d, %v", round, deleted, err)
		}
		want := 0
		if round%2 == 1 {
			want = 3 // the other devices stay
		}
		if n := pgtest.Count(t, db, `SELECT count(*) FROM `+table+` WHERE principal = $1`, user); n != want {
			t.Errorf("round %d: %d sessions of %s left, want %d (a rotation escaped the deletion)", round, n, user, want)
		}
		if _, body, _ := do(devices[0], "op=get"); body != " 0" {
			t.Errorf("round %d: the signed-out device's latest cookie still loads: %q", round, body)
		}
	}
}

// BenchmarkCitusLoad times Backend.Load on a Citus coordinator: a plain
// (local) table, the distributed table by the current key (one shard), by
// a key a renewal retired moments ago (the predecessor: a second read, one
// shard), and by a token of the old form (key alone: every shard). It
// reports the median (p50-ns) beside the mean; docs/citus.md quotes them.
//
//	PGSESSION_CITUS_URL=… go test -run '^$' -bench CitusLoad -benchtime 2000x ./pgstore/
func BenchmarkCitusLoad(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, be *pgstore.Backend, id backend.ID, sid backend.SessionID) {
		b.Helper()
		times := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			if _, err := be.Load(ctx, id, sid); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2].Nanoseconds()), "p50-ns")
	}
	session := func(b *testing.B, be *pgstore.Backend) (cur, old backend.ID, sid backend.SessionID) {
		b.Helper()
		r := randomID()
		old, cur, sid = randomID(), randomID(), backend.SessionID(r[:16])
		now := time.Now()
		for _, a := range []backend.Action{
			{Op: backend.OpInsert, New: old, SessionID: sid, Created: now, Accessed: now, Patch: backend.Patch{Replace: true, Set: map[string]json.RawMessage{"user": json.RawMessage(`"ada"`)}}},
			{Op: backend.OpRotate, Old: old, OldSessionID: sid, New: cur, Created: now, Accessed: now, Renewal: true},
		} {
			if err := be.Apply(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
		return cur, old, sid
	}
	db := openCitus(b)
	plain := pgstore.New(db, pgstore.WithTable(pgtest.Schema(b, db)+".sessions"))
	if err := plain.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	dist, _ := newCitusBackend(b)
	pcur, _, psid := session(b, plain)
	cur, old, sid := session(b, dist)
	b.Run("plain table", func(b *testing.B) { run(b, plain, pcur, psid) })
	b.Run("distributed, current key", func(b *testing.B) { run(b, dist, cur, sid) })
	b.Run("distributed, predecessor", func(b *testing.B) { run(b, dist, old, sid) })
	b.Run("distributed, old-form token", func(b *testing.B) { run(b, dist, cur, backend.SessionID{}) })
}
