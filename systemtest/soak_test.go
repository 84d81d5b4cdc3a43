package systemtest_test

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// soakDuration is how long TestSoak runs: $PGSESSION_SOAK (a Go duration),
// else 3s. -short skips it.
func soakDuration(t *testing.T) time.Duration {
	if testing.Short() {
		t.Skip("soak test skipped with -short")
	}
	if v := os.Getenv("PGSESSION_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PGSESSION_SOAK: %v", err)
		}
		return d
	}
	return 3 * time.Second
}

// soakHandler: ?op=get&k=K returns K's integer (-1 if absent); ?op=inc&k=K
// increments it; ?op=login rotates with a user; ?op=logout clears and rotates.
func soakHandler(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	k := r.URL.Query().Get("k")
	n := -1
	if _, err := s.Get(k, &n); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var err error
	switch r.URL.Query().Get("op") {
	case "inc":
		n = max(n, 0) + 1
		err = s.Set(k, n)
	case "login":
		if err = s.Set("user", "soak"); err == nil {
			err = pgsession.RotateKey(r.Context())
		}
	case "logout":
		if err = s.Clear(); err == nil {
			err = pgsession.RotateKey(r.Context())
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, n)
}

// soakClient is one browser: it keeps its cookie.
type soakClient struct {
	srv    *httptest.Server
	cookie string
}

func (c *soakClient) do(query string) (int, int, error) {
	req, _ := http.NewRequest(http.MethodGet, c.srv.URL+"/?"+query, nil)
	if c.cookie != "" {
		req.Header.Set("Cookie", c.cookie)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == pgsession.DefaultCookieName {
			c.cookie = ""
			if ck.MaxAge >= 0 {
				c.cookie = ck.Name + "=" + ck.Value
			}
		}
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return resp.StatusCode, n, nil
}

// TestSoak runs readers, writers, logins and logouts against PostgreSQL for
// a while, then checks: no unexpected errors, no lost writes for keys with a
// single writer, no resurrected keys, goroutines and heap back near the start.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	b, _ := pgtest.NewBackend(t, "postgres")
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
		Cookie: pgsession.CookieConfig{Insecure: true}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseGoroutines := runtime.NumGoroutine()

	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(soakHandler)))
	const owners, shared = 12, 4
	var (
		mu       sync.Mutex
		failures []string
		dead     []string // cookies of logged-out or rotated-away sessions
		requests int
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	end := time.Now().Add(d)
	var wg sync.WaitGroup

	// Owners: one writer per session, with logins and logouts.
	for w := range owners {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			c := &soakClient{srv: srv}
			want := -1
			for n := 0; time.Now().Before(end); n++ {
				op := rng.IntN(100)
				old := c.cookie
				var query string
				switch {
				case op < 70:
					query = "op=get&k=n"
				case op < 93:
					query = "op=inc&k=n"
				case op < 98:
					query = "op=login&k=n"
				default:
					query = "op=logout&k=n"
				}
				code, got, err := c.do(query)
				if err != nil || code != http.StatusOK {
					fail("owner %d %s: %d %v", w, query, code, err)
					return
				}
				if query == "op=inc&k=n" {
					want = max(want, 0) + 1 // inc answers with the new value
				}
				if got != want {
					fail("owner %d %s: n = %d, want %d (lost or phantom write)", w, query, got, want)
					return
				}
				if query == "op=logout&k=n" {
					want = -1
				}
				if old != "" && old != c.cookie && (query == "op=login&k=n" || query == "op=logout&k=n") {
					mu.Lock()
					dead = append(dead, old)
					mu.Unlock()
				}
				mu.Lock()
				requests++
				mu.Unlock()
			}
		})
	}

	// Shared sessions: two writers each, on different keys, merged atomically.
	for s := range shared {
		c0 := &soakClient{srv: srv}
		if code, _, err := c0.do("op=inc&k=base"); err != nil || code != http.StatusOK {
			t.Fatalf("create shared session: %d %v", code, err)
		}
		counts := make([]int, 2)
		var pair sync.WaitGroup
		for k := range 2 {
			pair.Go(func() {
				c := &soakClient{srv: srv, cookie: c0.cookie}
				key := fmt.Sprintf("k%d", k)
				for time.Now().Before(end) {
					if code, _, err := c.do("op=inc&k=" + key); err != nil || code != http.StatusOK {
						fail("shared %d %s: %d %v", s, key, code, err)
						return
					}
					counts[k]++
				}
			})
		}
		wg.Go(func() {
			pair.Wait()
			for k := range 2 {
				if _, got, err := c0.do(fmt.Sprintf("op=get&k=k%d", k)); err != nil || got != counts[k] {
					fail("shared %d k%d = %d, want %d (%v)", s, k, got, counts[k], err)
				}
			}
		})
	}
	wg.Wait()

	// No resurrection: every rotated-away or logged-out cookie is dead.
	for _, ck := range dead {
		c := &soakClient{srv: srv, cookie: ck}
		if code, got, err := c.do("op=get&k=n"); err != nil || code != http.StatusOK || got != -1 {
			fail("dead cookie serves n=%d (%d %v)", got, code, err)
		}
	}
	t.Logf("%v: %d owner requests, %d dead keys checked, stats %+v", d, requests, len(dead), m.Stats())
	for _, f := range failures {
		t.Error(f)
	}
	if requests == 0 || len(dead) == 0 {
		t.Errorf("the soak exercised too little: %d requests, %d dead keys", requests, len(dead))
	}

	srv.Close()
	srv.Client().CloseIdleConnections()
	goroutinesSettle(t, baseGoroutines)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB over the soak", grown>>20)
	}
}
