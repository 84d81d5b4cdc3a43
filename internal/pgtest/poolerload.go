package pgtest

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/pgsession/pgsession"
)

// PoolerLoad drives a middleware on a backend over db (typically through
// PgBouncer in transaction mode, with a driver stack under test), its table
// in a schema created through admin (a direct pool to the server), and fails
// t on any error, lost write or revived key:
//
//  1. one session takes 64 concurrent requests, each setting its own key:
//     every request is answered 200 and all 64 keys are stored (a statement
//     that the pooler bound to another client's, as lib/pq's two-message
//     parameterised statements allow, fails or writes elsewhere);
//  2. 16 clients increment, rotate (login) and log out, 40 rounds each:
//     every acknowledged increment is there at the next request, and no
//     rotated or logged-out key ever works again.
func PoolerLoad(t *testing.T, admin, db *sqlx.DB, opts ...pgsession.PostgresOption) {
	t.Helper()
	b, _ := NewBackendVia(t, admin, db, opts...)
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
		Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(poolerHandler)))
	t.Cleanup(srv.Close)
	client := srv.Client()
	do := func(cookie, query string) (body, setCookie string, err error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/?"+query, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", "", fmt.Errorf("status %d: %s", resp.StatusCode, raw)
		}
		if c := resp.Header.Get("Set-Cookie"); c != "" {
			setCookie, _, _ = strings.Cut(c, ";")
		}
		return string(raw), setCookie, nil
	}
	oneSessionManyKeys(t, do)
	clientsIncRotateLogout(t, do)
}

// poolerHandler increments "n" (?inc, the default), rotates the key
// (?rotate), logs out (?logout), sets key k (?set=k) or lists the keys
// (?keys), and answers n or the sorted keys.
func poolerHandler(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	var n int
	if _, err := s.Get("n", &n); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	switch {
	case q.Has("keys"):
		keys := s.Keys()
		sort.Strings(keys)
		fmt.Fprint(w, strings.Join(keys, ","))
		return
	case q.Has("set"):
		_ = s.Set(q.Get("set"), true)
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
}

type poolerDo func(cookie, query string) (body, setCookie string, err error)

func oneSessionManyKeys(t *testing.T, do poolerDo) {
	_, cookie, err := do("", "rotate")
	if err != nil || cookie == "" {
		t.Fatalf("login: cookie %q, %v", cookie, err)
	}
	const keys = 64
	var wg sync.WaitGroup
	failed := make(chan error, keys)
	for i := range keys {
		wg.Go(func() {
			if _, _, err := do(cookie, fmt.Sprintf("set=k%02d", i)); err != nil {
				failed <- err
			}
		})
	}
	wg.Wait()
	close(failed)
	n := 0
	for err := range failed {
		if n++; n <= 3 {
			t.Errorf("concurrent write: %v", err)
		}
	}
	got, _, err := do(cookie, "keys")
	if err != nil {
		t.Fatal(err)
	}
	stored := len(strings.Split(got, ",")) - 1 // "n" too
	t.Logf("one session, %d concurrent writes of different keys: %d failed, %d keys stored", keys, n, stored)
	if n != 0 || stored != keys {
		t.Errorf("%d of %d concurrent writes failed, %d keys stored; want 0 failed, %d stored", n, keys, stored, keys)
	}
}

func clientsIncRotateLogout(t *testing.T, do poolerDo) {
	const clients, rounds = 16, 40
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
				body, set, err := do(cookie, query)
				n, _ := strconv.Atoi(body)
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
		body, _, err := do(cookie, "inc")
		if err != nil {
			errs++
			t.Errorf("replaying a dead cookie: %v", err)
		} else if body != "1" {
			revived++
		}
	}
	t.Logf("%d clients: %d acknowledged writes, %d errors, %d lost, %d of %d dead keys revived",
		clients, acked, errs, lost, revived, len(dead))
	if errs != 0 || lost != 0 || revived != 0 {
		t.Errorf("errors %d, lost acknowledged writes %d, revived keys %d; want all 0", errs, lost, revived)
	}
}
