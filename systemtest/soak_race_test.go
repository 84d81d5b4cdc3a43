package systemtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// raceHandler serves sessions that belong to a user: ?op=login&u=U starts
// one; every other op answers 409 without touching a session that has no
// user (a stale or dead cookie). ?op=inc&k=K increments K and answers the
// new value; ?op=get answers the data as JSON; ?op=rotate rotates the key.
func raceHandler(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	q := r.URL.Query()
	var user string
	if _, err := s.Get("user", &user); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if q.Get("op") == "login" {
		if err := s.Set("user", q.Get("u")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return
	}
	if user == "" {
		http.Error(w, "no session", http.StatusConflict)
		return
	}
	var err error
	switch q.Get("op") {
	case "inc":
		var n int
		if _, err = s.Get(q.Get("k"), &n); err == nil {
			err = s.Set(q.Get("k"), n+1)
			fmt.Fprint(w, n+1)
		}
	case "get":
		data := map[string]any{"user": user}
		for _, k := range []string{"w0", "w1"} {
			var n int
			if _, err = s.Get(k, &n); err != nil {
				break
			}
			data[k] = n
		}
		err = json.NewEncoder(w).Encode(data)
	case "rotate":
		err = pgsession.RotateKey(r.Context())
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// raceSession is one user's session, shared by its writers, reader and
// rotator.
type raceSession struct {
	user   string
	mu     sync.Mutex
	cookie string
	acked  [2]atomic.Int64 // per writer key: the last value whose save was acknowledged
}

func (s *raceSession) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cookie
}

// raceClient makes requests and reports the session cookie a response set
// ("" when it set none).
type raceClient struct {
	srv    *httptest.Server
	client *http.Client
}

func (c *raceClient) do(query, cookie string) (code int, body, set string, err error) {
	req, _ := http.NewRequest(http.MethodGet, c.srv.URL+"/?"+query, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == pgsession.DefaultCookieName && ck.MaxAge >= 0 && ck.Value != "" {
			set = ck.Name + "=" + ck.Value
		}
	}
	return resp.StatusCode, string(b), set, err
}

// TestSoakRotationRaces rotates session keys while other requests of the
// same session read and write it, against PostgreSQL, for the soak duration.
// A write is acknowledged by a 200; a write that lost the race with a
// rotation (its cookie already retired, or its save after the rotation)
// answers 409 and must not be applied. Without a PrincipalKey every
// rotation counts as a change of user, so a retired key reads nothing. Checked all along: each
// writer's next value follows its last acknowledged one (no lost writes, no
// phantom ones), readers see every acknowledged write and only their own
// user's data, rotated-away cookies never load again and create nothing. At
// the end: one row per session, and goroutines and heap back near the start.
func TestSoakRotationRaces(t *testing.T) {
	d := soakDuration(t)
	admin := pgtest.Open(t, "postgres")
	b, table := pgtest.NewBackend(t, "postgres")
	m := newManager(t, pgsession.Config{Backend: b, Cookie: pgsession.CookieConfig{Insecure: true}})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseGoroutines := runtime.NumGoroutine()
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(raceHandler)))
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	c := &raceClient{srv: srv, client: &http.Client{Transport: tr}}

	var (
		mu       sync.Mutex
		failures []string
		dead     []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var acks, stale, rotations, deadChecks atomic.Int64

	const sessions = 8
	ss := make([]*raceSession, sessions)
	for i := range ss {
		ss[i] = &raceSession{user: "u" + strconv.Itoa(i)}
		code, _, set, err := c.do("op=login&u="+ss[i].user, "")
		if err != nil || code != http.StatusOK || set == "" {
			t.Fatalf("login: %d %v", code, err)
		}
		ss[i].cookie = set
	}

	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, s := range ss {
		for k := range 2 {
			wg.Go(func() { // the only writer of key wk
				key := "w" + strconv.Itoa(k)
				for time.Now().Before(end) {
					code, body, set, err := c.do("op=inc&k="+key, s.current())
					switch {
					case err != nil:
						fail("%s %s: %v", s.user, key, err)
						return
					case code == http.StatusConflict: // its cookie was rotated away, or its save lost to a rotation: not applied, retry with the new one
						stale.Add(1)
					case code != http.StatusOK:
						fail("%s %s: status %d %q", s.user, key, code, body)
						return
					case set != "": // a write keeps the key: no cookie
						fail("%s %s: a write set the cookie %q", s.user, key, set)
						return
					default:
						n, _ := strconv.Atoi(body)
						if want := s.acked[k].Load() + 1; int64(n) != want {
							fail("%s %s: wrote %d, want %d (a lost or phantom write)", s.user, key, n, want)
							return
						}
						s.acked[k].Store(int64(n))
						acks.Add(1)
					}
				}
			})
		}
		wg.Go(func() { // a reader
			for time.Now().Before(end) {
				lo := [2]int64{s.acked[0].Load(), s.acked[1].Load()}
				code, body, _, err := c.do("op=get", s.current())
				if err != nil || (code != http.StatusOK && code != http.StatusConflict) {
					fail("%s read: %d %v", s.user, code, err)
					return
				}
				if code == http.StatusConflict {
					continue
				}
				var got struct {
					User   string
					W0, W1 int64
				}
				if err := json.Unmarshal([]byte(body), &got); err != nil || got.User != s.user {
					fail("%s read %q (%v)", s.user, body, err)
					return
				}
				for k, v := range [2]int64{got.W0, got.W1} {
					if hi := s.acked[k].Load() + 1; v < lo[k] || v > hi {
						fail("%s read w%d = %d, want between %d and %d", s.user, k, v, lo[k], hi)
						return
					}
				}
			}
		})
		wg.Go(func() { // the rotator
			rng := rand.New(rand.NewPCG(uint64(len(s.user)), 7))
			for time.Now().Before(end) {
				time.Sleep(time.Duration(1+rng.IntN(8)) * time.Millisecond)
				old := s.current()
				code, body, set, err := c.do("op=rotate", old)
				if err != nil || code != http.StatusOK || set == "" || set == old {
					fail("%s rotate: %d %q %v", s.user, code, body, err)
					return
				}
				s.mu.Lock()
				s.cookie = set
				s.mu.Unlock()
				mu.Lock()
				dead = append(dead, old)
				mu.Unlock()
				rotations.Add(1)
			}
		})
	}
	wg.Go(func() { // rotated-away cookies stay dead, during the run too
		rng := rand.New(rand.NewPCG(1, 2))
		for time.Now().Before(end) {
			mu.Lock()
			var ck string
			if len(dead) > 0 {
				ck = dead[rng.IntN(len(dead))]
			}
			mu.Unlock()
			if ck == "" {
				time.Sleep(time.Millisecond)
				continue
			}
			for _, op := range []string{"op=get", "op=inc&k=w0", "op=rotate"} {
				if code, body, set, err := c.do(op, ck); err != nil || code != http.StatusConflict || set != "" {
					fail("dead cookie, %s: %d %q, set %q, %v", op, code, body, set, err)
					return
				}
			}
			deadChecks.Add(1)
		}
	})
	wg.Wait()

	for _, s := range ss {
		code, body, _, err := c.do("op=get", s.current())
		var got struct{ W0, W1 int64 }
		if err != nil || code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil ||
			got.W0 != s.acked[0].Load() || got.W1 != s.acked[1].Load() {
			fail("%s at the end: %d %q %v, want w0=%d w1=%d", s.user, code, body, err, s.acked[0].Load(), s.acked[1].Load())
		}
	}
	for _, ck := range dead {
		if code, _, _, err := c.do("op=get", ck); err != nil || code != http.StatusConflict {
			fail("a rotated-away cookie loads: %d %v", code, err)
		}
	}
	if n := pgtest.Count(t, admin, "SELECT count(*) FROM "+table); n != sessions {
		fail("%d rows stored, want one per session (%d)", n, sessions)
	}
	t.Logf("%v: %d acknowledged writes, %d refused across a rotation (409) and retried, %d rotations, %d dead-cookie checks; stats %+v",
		d, acks.Load(), stale.Load(), rotations.Load(), deadChecks.Load(), m.Stats())
	for _, f := range failures {
		t.Error(f)
	}
	if acks.Load() == 0 || rotations.Load() == 0 || deadChecks.Load() == 0 {
		t.Error("the soak exercised too little")
	}

	srv.Close()
	tr.CloseIdleConnections()
	goroutinesSettle(t, baseGoroutines)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
}
