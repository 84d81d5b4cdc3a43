package systemtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
	"github.com/pgsession/pgsession/pgstore"
)

// longRun reports whether PGSESSION_LONG=1 asks for the long rounds of the
// topology tests.
func longRun() bool { return os.Getenv("PGSESSION_LONG") == "1" }

// heavy skips a topology test (loads of several seconds, throwaway
// clusters) under -short.
func heavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("topology test skipped with -short")
	}
}

// topoHandler serves sessions that belong to a user. ?op=login&u=U logs in
// (sets the user and rotates the key, keeping the data); every other op
// answers 409 for a session without a user (a dead or unknown cookie).
// ?op=inc increments n and answers the new value, ?op=get answers n,
// ?op=logout clears the session and rotates.
func topoHandler(w http.ResponseWriter, r *http.Request) {
	s := pgsession.FromContext(r.Context())
	q := r.URL.Query()
	var user string
	var n int
	if _, err := s.Get("user", &user); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if _, err := s.Get("n", &n); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	op := q.Get("op")
	if op != "login" && user == "" {
		http.Error(w, "no session", http.StatusConflict)
		return
	}
	var err error
	switch op {
	case "login":
		if err = s.Set("user", q.Get("u")); err == nil {
			err = pgsession.RotateKey(r.Context())
		}
	case "inc":
		n++
		err = s.Set("n", n)
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

// topoApp is a Manager serving topoHandler over httptest on a pool of its
// own, logging errors into logs.
type topoApp struct {
	db   *sqlx.DB
	b    *pgsession.PostgresBackend
	m    *pgsession.Manager
	srv  *httptest.Server
	logs *pgtest.LogBuffer
}

// deadlineDriver is lib/pq with pgstore.ReadDeadlineDialer.
const deadlineDriver = "postgres+deadline"

// openDB opens a pool on dsn with driver: "pgx", "postgres" (lib/pq), or
// deadlineDriver, lib/pq dialing through a ReadDeadlineDialer of 2s.
func openDB(t *testing.T, driver, dsn string) *sqlx.DB {
	t.Helper()
	var db *sqlx.DB
	if driver == deadlineDriver {
		c, err := pq.NewConnector(dsn)
		if err != nil {
			t.Fatal(err)
		}
		c.Dialer(pgstore.ReadDeadlineDialer{Timeout: 2 * time.Second})
		db = sqlx.NewDb(sql.OpenDB(c), "postgres")
	} else {
		var err error
		if db, err = sqlx.Open(driver, dsn); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newTopoApp opens a pool on dsn with driver (see openDB), migrates table
// and serves topoHandler.
func newTopoApp(t *testing.T, driver, dsn, table string, opts ...pgsession.PostgresOption) *topoApp {
	t.Helper()
	db := openDB(t, driver, dsn)
	a := &topoApp{db: db, logs: &pgtest.LogBuffer{}}
	a.b = pgsession.NewPostgresBackend(db, append([]pgsession.PostgresOption{pgsession.WithTable(table)}, opts...)...)
	t.Cleanup(func() { _ = a.b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.b.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a.m = newManager(t, pgsession.Config{Backend: a.b, Cookie: pgsession.CookieConfig{Insecure: true},
		Logger: slog.New(slog.NewTextHandler(a.logs, nil))})
	a.srv = httptest.NewServer(a.m.Middleware(http.HandlerFunc(topoHandler)))
	t.Cleanup(a.srv.Close)
	return a
}

// duplicateKeys counts the saves that failed on a duplicate key.
func (a *topoApp) duplicateKeys() int { return strings.Count(a.logs.String(), "duplicate key") }

// topoClient is one browser with a session of its own and its only writer.
type topoClient struct {
	id      int
	cookie  string
	acked   int // n after the last acknowledged write
	pending int // writes since then that failed: each may have been applied
	// suspect: a failed login or logout may have rotated the key away, or
	// may still do so. Its statement can reach PostgreSQL after the 500, and
	// after later requests of the client: pgx keeps a timed-out connection
	// open while it sends the cancel, so on a stalled network both arrive
	// when it heals, alongside the client's next request. Only a rotation
	// that answered a new cookie (it deleted the old key itself) or a fresh
	// login ends it.
	suspect bool
	rng     *rand.Rand
}

// topoChecker drives clients against an app's URL and checks what they see:
// no acknowledged increment is ever lost and no unacknowledged one appears
// from nowhere (each value lies between the last acknowledged one and that
// plus the failed attempts since), an acknowledged login carries a cookie
// that works, and the key of every acknowledged rotation or logout stays
// dead for good.
type topoChecker struct {
	url    func() string // the app's base URL, asked at each request
	hc     *http.Client
	mu     sync.Mutex
	fails  []string
	dead   []string
	status map[int]int
	slow   time.Duration // the slowest request
	slowOp string        // its query and outcome

	acks, relogins, requests atomic.Int64
	// What the checks found: acknowledged increments lost,
	// sessions of acknowledged cookies gone, dead keys that work again.
	lost, gone, revived atomic.Int64
}

// newTopoChecker returns a checker for the app at url. Each request is
// bounded by reqTimeout, so a hang fails the test rather than the run.
func newTopoChecker(t *testing.T, url func() string, reqTimeout time.Duration) *topoChecker {
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	t.Cleanup(tr.CloseIdleConnections)
	return &topoChecker{url: url, hc: &http.Client{Transport: tr, Timeout: reqTimeout}, status: map[int]int{}}
}

func (k *topoChecker) fail(format string, args ...any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.fails) < 30 {
		k.fails = append(k.fails, fmt.Sprintf(format, args...))
	}
}

// report fails t with what the checker found.
func (k *topoChecker) report(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.fails {
		t.Error(f)
	}
}

// do makes one request and returns its status (0 for a transport error),
// body, the session cookie it set ("" if none) and whether it expired the
// cookie.
func (k *topoChecker) do(query, cookie string) (code int, body, set string, expired bool) {
	req, _ := http.NewRequest(http.MethodGet, k.url()+"/?"+query, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	start := time.Now()
	resp, err := k.hc.Do(req)
	took := time.Since(start)
	k.requests.Add(1)
	if err == nil {
		defer resp.Body.Close()
		var b []byte
		if b, err = io.ReadAll(resp.Body); err == nil {
			code, body = resp.StatusCode, strings.TrimSpace(string(b))
		}
		for _, c := range resp.Cookies() {
			if c.Name == pgsession.DefaultCookieName {
				if c.MaxAge < 0 {
					expired = true
				} else if c.Value != "" {
					set = c.Name + "=" + c.Value
				}
			}
		}
	}
	k.mu.Lock()
	k.status[code]++
	if took > k.slow {
		k.slow, k.slowOp = took, fmt.Sprintf("%s at %s: %d %q", query, start.Format("15:04:05.000"), code, body)
	}
	k.mu.Unlock()
	return code, body, set, expired
}

// statuses returns a copy of the statuses seen so far.
// slowest returns the time the slowest request took so far.
func (k *topoChecker) slowest() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.slow
}

func (k *topoChecker) statuses() map[int]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := make(map[int]int, len(k.status))
	for c, n := range k.status {
		m[c] = n
	}
	return m
}

// value checks a value of n read or written by c against what c knows.
func (k *topoChecker) value(c *topoClient, what, body string) (int, bool) {
	n, err := strconv.Atoi(body)
	if err != nil {
		k.fail("client %d %s: body %q", c.id, what, body)
		return 0, false
	}
	if n < c.acked {
		k.lost.Add(int64(c.acked - n))
	}
	if n < c.acked || n > c.acked+c.pending {
		k.fail("client %d %s: n = %d, want %d to %d (a lost acknowledged write or a phantom one)", c.id, what, n, c.acked, c.acked+c.pending)
		c.acked, c.pending = n, 0 // go on from what is stored, to count each loss once
		return n, false
	}
	return n, true
}

// vanished handles a 409 for c's cookie: expected only after a failed login
// or logout, which may have rotated the key away.
func (k *topoChecker) vanished(c *topoClient, what string) {
	if c.suspect {
		k.relogins.Add(1)
	} else {
		k.gone.Add(1)
		k.fail("client %d %s: the session of an acknowledged cookie is gone (n was %d)", c.id, what, c.acked)
	}
	c.cookie, c.suspect = "", false
}

// step makes one request for c: a login when it has no session, else mostly
// increments, with rotations (a login again), reads and logouts.
func (k *topoChecker) step(c *topoClient) {
	if c.cookie == "" {
		code, _, set, _ := k.do("op=login&u=u"+strconv.Itoa(c.id), "")
		switch {
		case code == http.StatusOK && set == "":
			k.fail("client %d: login answered 200 without a cookie", c.id)
		case code == http.StatusOK:
			c.cookie, c.acked, c.pending, c.suspect = set, 0, 0, false
		}
		return
	}
	old := c.cookie
	switch op := c.rng.IntN(100); {
	case op < 70:
		code, body, _, _ := k.do("op=inc", c.cookie)
		switch code {
		case http.StatusOK:
			c.pending++ // this very write
			if n, ok := k.value(c, "inc", body); ok && n == c.acked {
				k.lost.Add(1) // the increment to n was acknowledged before
				k.fail("client %d inc: acknowledged n = %d, which was already stored", c.id, n)
			} else if ok {
				// suspect stays: the failed login or logout may still land
				// (see topoClient.suspect), after this request loaded.
				c.acked, c.pending = n, 0
				k.acks.Add(1)
			}
		case http.StatusConflict:
			k.vanished(c, "inc")
		default:
			c.pending++
		}
	case op < 80:
		code, body, _, _ := k.do("op=get", c.cookie)
		switch code {
		case http.StatusOK:
			k.value(c, "get", body)
		case http.StatusConflict:
			k.vanished(c, "get")
		}
	case op < 95:
		code, body, set, _ := k.do("op=login&u=u"+strconv.Itoa(c.id), c.cookie)
		switch code {
		case http.StatusOK:
			if set == "" || set == old {
				// Only a failed login or logout landing late can have moved
				// the key away under this rotation (ErrGone: 200 without a
				// cookie); the old key is dead either way.
				if !c.suspect {
					k.fail("client %d: rotation answered 200 without a new cookie", c.id)
				}
				c.suspect = true
				return
			}
			if body == "0" && c.suspect && c.acked+c.pending > 0 {
				// A failed login or logout did rotate the key away: this
				// login found no session and started a fresh one.
				k.relogins.Add(1)
				c.acked, c.pending = 0, 0
			} else {
				k.value(c, "rotate", body)
			}
			c.cookie, c.suspect = set, false
			k.addDead(old)
		case http.StatusConflict:
			k.vanished(c, "rotate")
		default:
			c.suspect = true
		}
	default:
		code, _, _, expired := k.do("op=logout", c.cookie)
		switch code {
		case http.StatusOK:
			if !expired {
				k.fail("client %d: logout answered 200 without expiring the cookie", c.id)
			}
			c.cookie = ""
			k.addDead(old)
		case http.StatusConflict:
			k.vanished(c, "logout")
		default:
			c.suspect = true
		}
	}
}

func (k *topoChecker) addDead(cookie string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = append(k.dead, cookie)
}

// run drives clients until stop is closed, d has passed or each made
// maxRequests requests, and returns them for final checks.
func (k *topoChecker) run(clients int, d time.Duration, maxRequests int, stop <-chan struct{}) []*topoClient {
	end := time.Now().Add(d)
	cs := make([]*topoClient, clients)
	var wg sync.WaitGroup
	for i := range cs {
		c := &topoClient{id: i, rng: rand.New(rand.NewPCG(uint64(i), 11))}
		cs[i] = c
		wg.Go(func() {
			for range maxRequests {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(end) {
					return
				}
				k.step(c)
			}
		})
	}
	wg.Wait()
	return cs
}

// settle checks, once the service is healthy again, every client's session
// and every dead key: each acknowledged value is there, and no key of an
// acknowledged rotation or logout works. Failed requests are retried for up
// to within.
func (k *topoChecker) settle(cs []*topoClient, within time.Duration) {
	deadline := time.Now().Add(within)
	retry := func(query, cookie string) (int, string, string) {
		for {
			code, body, set, _ := k.do(query, cookie)
			if code == http.StatusOK || code == http.StatusConflict || time.Now().After(deadline) {
				return code, body, set
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, c := range cs {
		if c.cookie == "" {
			continue
		}
		switch code, body, _ := retry("op=get", c.cookie); code {
		case http.StatusOK:
			k.value(c, "final get", body)
		case http.StatusConflict:
			if !c.suspect {
				k.gone.Add(1)
				k.fail("client %d at the end: the session of an acknowledged cookie is gone (n was %d)", c.id, c.acked)
			}
		default:
			k.fail("client %d at the end: status %d", c.id, code)
		}
	}
	k.mu.Lock()
	dead := slices.Clone(k.dead)
	k.mu.Unlock()
	for _, ck := range dead {
		if code, body, set := retry("op=get", ck); code != http.StatusConflict || set != "" {
			if code == http.StatusOK {
				k.revived.Add(1)
			}
			k.fail("a dead key works again: %d %q, set %q", code, body, set)
		}
	}
}

// recovery makes requests until one succeeds and returns how long that
// took, or fails after within.
func (k *topoChecker) recovery(within time.Duration) (time.Duration, bool) {
	start := time.Now()
	for {
		if code, _, _, _ := k.do("op=login&u=probe", ""); code == http.StatusOK {
			return time.Since(start), true
		}
		if time.Since(start) > within {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// summary describes the run, for logs and docs/topology-figures.md.
func (k *topoChecker) summary() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return fmt.Sprintf("%d requests, %d acknowledged increments, %d dead keys, %d sessions lost to a failed login/logout; "+
		"found %d lost acknowledged increments, %d acknowledged sessions gone, %d dead keys revived; statuses %v, slowest %v (%s)",
		k.requests.Load(), k.acks.Load(), len(k.dead), k.relogins.Load(), k.lost.Load(), k.gone.Load(), k.revived.Load(),
		k.status, k.slow.Round(time.Millisecond), k.slowOp)
}
