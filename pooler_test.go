package pgsession_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// poolerDrivers are the driver configurations that must work behind
// PgBouncer in transaction mode: lib/pq with its default DSN, and pgx
// told not to rely on prepared statements.
var poolerDrivers = []struct{ name, driver, params string }{
	{"libpq", "postgres", ""},
	// pgx (default_query_exec_mode=exec) is tested in internal/pgxtest.
}

// The conformance suite passes through PgBouncer in transaction mode.
func TestPostgresBackendPgBouncer(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for _, d := range poolerDrivers {
		t.Run(d.name, func(t *testing.T) {
			db := bouncer.Open(t, d.driver, d.params)
			pgsessiontest.TestBackend(t, func(t *testing.T) pgsession.Backend {
				b, _ := pgtest.NewBackendOn(t, db)
				return b
			})
		})
	}
}

// Behind PgBouncer: Migrate's transaction-scoped lock, the cleanup's
// per-batch lock and literal quoting work, and no advisory lock is left.
func TestPgBouncerMigrateCleanupQuoting(t *testing.T) {
	admin := pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	for _, d := range poolerDrivers {
		t.Run(d.name, func(t *testing.T) {
			db := bouncer.Open(t, d.driver, d.params)
			b, table := pgtest.NewBackendOn(t, db)
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					if err := b.Migrate(context.Background()); err != nil {
						t.Errorf("concurrent Migrate through pgbouncer: %v", err)
					}
				})
			}
			wg.Wait()
			for _, s := range hostile {
				roundTrip(t, b, s)
			}
			m := newManager(t, pgsession.Config{Backend: b})
			seed(t, table, time.Now(), 1500)
			var counts [3]int
			for i := range counts {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					n, ok, err := b.DeleteExpiredExclusive(ctx, pgsession.Cutoffs{Now: time.Now(), IdleBefore: time.Now().Add(-8 * time.Hour), CreatedBefore: time.Now().Add(-30 * 24 * time.Hour)}, 5000)
					if err != nil {
						t.Errorf("DeleteExpiredExclusive: %v", err)
					}
					if ok {
						counts[i] = n
					}
				})
			}
			wg.Wait()
			n, err := m.DeleteExpired(context.Background())
			if err != nil || counts[0]+counts[1]+counts[2]+n != 3000 {
				t.Errorf("removed %v then %d (%v), want 3,000 in all", counts, n, err)
			}
			if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != 1500 {
				t.Errorf("%d rows left, want 1,500", n)
			}
			if n := cleanupLocks(t, table); n != 0 {
				t.Errorf("%d cleanup locks left", n)
			}
		})
	}
}

// poolerApp is a server whose handler increments "n", rotates the key
// (?rotate) or logs out (?logout), and reports n and whether the session
// was loaded.
func newPoolerApp(t *testing.T, db *sqlx.DB) *httptest.Server {
	t.Helper()
	b, _ := pgtest.NewBackendOn(t, db)
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
		Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var n int
		if _, err := s.Get("n", &n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q := r.URL.Query()
		switch {
		case q.Has("logout"):
			_ = s.Clear()
		case q.Has("rotate"):
			_ = s.Set("n", n+1)
			_ = pgsession.RotateKey(r.Context())
			n++
		default:
			_ = s.Set("n", n+1)
			n++
		}
		fmt.Fprint(w, n)
	})))
	t.Cleanup(srv.Close)
	return srv
}

// Load through PgBouncer in transaction mode with lib/pq's default DSN:
// clients increment, rotate and log out. Every acknowledged write is
// there afterwards, and no rotated or logged-out key ever works again.
func TestPgBouncerLoad(t *testing.T) {
	pgtest.Open(t, "postgres")
	bouncer := pgtest.NewPgBouncer(t)
	db := bouncer.Open(t, "postgres", "")
	db.SetMaxOpenConns(40) // more clients than PgBouncer's 10 server connections
	srv := newPoolerApp(t, db)
	client := srv.Client()
	do := func(cookie, query string) (n int, setCookie string, err error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/?"+query, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		if c := resp.Header.Get("Set-Cookie"); c != "" {
			setCookie, _, _ = strings.Cut(c, ";")
		}
		n, err = strconv.Atoi(string(body))
		return n, setCookie, err
	}
	const clients, rounds = 16, 60
	var mu sync.Mutex
	var errs, lost, revived, acked int
	var dead []string // cookies rotated away or logged out
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			cookie, want := "", 0
			for i := range rounds {
				query := "inc"
				switch {
				case i%10 == 9:
					query = "logout"
				case i%5 == 2:
					query = "rotate"
				}
				n, set, err := do(cookie, query)
				mu.Lock()
				switch {
				case err != nil:
					errs++
					t.Errorf("client %d: %s: %v", c, query, err)
				case query == "logout":
					dead = append(dead, cookie)
					cookie, want = "", 0
				default:
					acked++
					if n != want+1 {
						lost++
						t.Errorf("client %d: %s answered %d, want %d", c, query, n, want+1)
					}
					want = n
					if set != "" && set != cookie {
						if cookie != "" {
							dead = append(dead, cookie)
						}
						cookie = set
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, cookie := range dead {
		if cookie == "" {
			continue
		}
		n, _, err := do(cookie, "inc")
		if err != nil {
			errs++
			t.Errorf("replaying a dead cookie: %v", err)
		} else if n != 1 {
			revived++
		}
	}
	t.Logf("%d clients through pgbouncer (transaction mode, lib/pq default DSN): %d acknowledged writes, %d errors, %d lost, %d of %d dead keys revived",
		clients, acked, errs, lost, revived, len(dead))
	if errs != 0 || lost != 0 || revived != 0 {
		t.Errorf("errors %d, lost acknowledged writes %d, revived keys %d; want all 0", errs, lost, revived)
	}
}
