package pgsession_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// countingBackend counts Backend.Load calls: the database reads a request
// costs.
type countingBackend struct {
	backend.Backend
	loads atomic.Int64
}

func (b *countingBackend) Load(ctx context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	b.loads.Add(1)
	return b.Backend.Load(ctx, id, sid)
}

// tossCookie is one session cookie a request may carry in the tossing test.
type tossCookie struct {
	name  string // for failure messages
	value string
	key   string // the distinct key it verifies to ("" if it does not verify)
	live  string // the user of its live session, "" if none
}

// The cap on the session keys checked per request (maxCookieKeys).
const tossCap = 3

// Cookie tossing through the key cap: a sibling host without the __Host-
// prefix tosses in its live cookie and signed cookies of its own dead
// sessions (on longer paths, so browsers send them first), hoping the
// victim's live cookie lands beyond the keys the loader checks. Every
// order of 2 to 6 cookies drawn from the victim's live key V, the
// attacker's live key A, three dead but validly signed keys of the
// attacker D1-D3, and a forged value F (A's with a bad signature) goes
// through a real server, and the outcome must follow the rule:
//
//   - more distinct verifying keys than the cap (3): no session, counted as
//     Ambiguous, and not one database read;
//   - else every verifying key is loaded, and keys of two different live
//     sessions (V and A): no session, counted as Ambiguous;
//   - else the one live session among them (dead and forged values beside
//     it are ignored), or none.
func TestCookieTossingEveryOrder(t *testing.T) {
	for name, newBackend := range pgtest.Backends() {
		t.Run(name, func(t *testing.T) {
			backend := &countingBackend{Backend: newBackend(t)}
			hashKey := make([]byte, 32)
			_, _ = rand.Read(hashKey)
			m, err := pgsession.New(pgsession.Config{
				Backend:  backend,
				HashKeys: [][]byte{hashKey},
				Cookie:   pgsession.CookieConfig{Insecure: true}, // "session-key": tossing works against it
				Logger:   slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s := pgsession.FromContext(r.Context())
				var err error
				switch r.URL.Path {
				case "/login":
					err = s.Set("user", r.URL.Query().Get("user"))
				case "/logout":
					err = s.Clear()
				}
				var user string
				if err == nil {
					_, err = s.Get("user", &user)
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				_, _ = io.WriteString(w, user)
			})))
			t.Cleanup(srv.Close)
			name := m.CookieName()

			get := func(path, cookies string) (user, setCookie string) {
				t.Helper()
				req, err := http.NewRequest("GET", srv.URL+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if cookies != "" {
					req.Header.Set("Cookie", cookies)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
				}
				for _, c := range resp.Cookies() {
					if c.Name == name && c.MaxAge >= 0 {
						setCookie = c.Value
					}
				}
				return string(body), setCookie
			}
			login := func(user string) string {
				t.Helper()
				if _, v := get("/login?user="+user, ""); v != "" {
					return v
				}
				t.Fatalf("login %s set no cookie", user)
				return ""
			}

			V := tossCookie{name: "V", value: login("victim"), live: "victim"}
			A := tossCookie{name: "A", value: login("attacker"), live: "attacker"}
			V.key, A.key = "V", "A"
			pool := []tossCookie{V, A}
			for _, d := range []string{"D1", "D2", "D3"} {
				v := login("attacker")
				if user, _ := get("/logout", name+"="+v); user != "" {
					t.Fatalf("logout answered %q", user)
				}
				pool = append(pool, tossCookie{name: d, value: v, key: d})
			}
			forged := []byte(A.value)
			forged[len(forged)-4] ^= 'A' ^ 'B' // inside the MAC: base64 still, signature bad
			pool = append(pool, tossCookie{name: "F", value: string(forged)})

			var failures []string
			total, crossed := 0, 0
			for k := 2; k <= len(pool); k++ {
				permutations(len(pool), k, func(idx []int) {
					total++
					cookies := make([]string, len(idx))
					names := make([]string, len(idx))
					keys := map[string]bool{}
					lives := map[string]bool{}
					for i, j := range idx {
						c := pool[j]
						cookies[i], names[i] = name+"="+c.value, c.name
						if c.key != "" {
							keys[c.key] = true
						}
						if c.live != "" {
							lives[c.live] = true
						}
					}
					var want string
					ambiguous := len(keys) > tossCap || len(lives) > 1
					if !ambiguous && len(lives) == 1 {
						for u := range lives {
							want = u
						}
					}
					loads0, amb0 := backend.loads.Load(), m.Stats().Ambiguous
					got, _ := get("/", strings.Join(cookies, "; "))
					loads, amb := backend.loads.Load()-loads0, m.Stats().Ambiguous-amb0
					var bad []string
					if len(lives) > 1 && got != "" {
						crossed++ // served a user although both live sessions' keys were sent
					}
					if got != want {
						bad = append(bad, "user="+quoteOr(got)+", want "+quoteOr(want))
					}
					if ambiguous != (amb == 1) || amb > 1 {
						bad = append(bad, "Stats.Ambiguous +"+strconv.Itoa(int(amb)))
					}
					switch {
					case len(keys) > tossCap && loads != 0:
						bad = append(bad, strconv.Itoa(int(loads))+" loads over the cap, want 0")
					case loads > tossCap:
						bad = append(bad, strconv.Itoa(int(loads))+" loads, more than the cap")
					case !ambiguous && loads != int64(len(keys)):
						bad = append(bad, strconv.Itoa(int(loads))+" loads, want "+strconv.Itoa(len(keys))+" (every verifying key)")
					}
					if bad != nil {
						failures = append(failures, "["+strings.Join(names, ", ")+"]: "+strings.Join(bad, "; "))
					}
				})
			}
			for i, f := range failures {
				if i == 40 {
					t.Errorf("... and %d more", len(failures)-i)
					break
				}
				t.Error(f)
			}
			if len(failures) > 0 {
				t.Errorf("%d of %d orders failed; in %d, both live sessions' keys were sent and one was served", len(failures), total, crossed)
			}

			// Nothing above changed either live session.
			for _, c := range []tossCookie{V, A} {
				if got, _ := get("/", name+"="+c.value); got != c.live {
					t.Errorf("%s alone: user=%q, want %q", c.name, got, c.live)
				}
			}
			// The same key twice, however signed, is one key: V sent three
			// times beside two dead keys is within the cap.
			if got, _ := get("/", strings.Join([]string{name + "=" + pool[2].value, name + "=" + V.value, name + "=" + pool[3].value, name + "=" + V.value, name + "=" + V.value}, "; ")); got != "victim" {
				t.Errorf("[D1, V, D2, V, V]: user=%q, want victim", got)
			}
		})
	}
}

// permutations calls f with every ordered choice of k distinct indices
// below n.
func permutations(n, k int, f func([]int)) {
	idx := make([]int, 0, k)
	used := make([]bool, n)
	var rec func()
	rec = func() {
		if len(idx) == k {
			f(idx)
			return
		}
		for i := range n {
			if !used[i] {
				used[i] = true
				idx = append(idx, i)
				rec()
				idx = idx[:len(idx)-1]
				used[i] = false
			}
		}
	}
	rec()
}

func quoteOr(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
