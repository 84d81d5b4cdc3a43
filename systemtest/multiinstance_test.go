package systemtest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
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
)

// Environment of a test binary re-executed as an app instance (see
// runAppInstance).
const (
	envAppDSN     = "PGSESSION_APP_DSN"     // the database; set, the binary is an app instance
	envAppDriver  = "PGSESSION_APP_DRIVER"  // "pgx" or "postgres"
	envAppTable   = "PGSESSION_APP_TABLE"   // the sessions table
	envAppCleanup = "PGSESSION_APP_CLEANUP" // RunCleanup's interval
)

// TestMain runs the test binary as an app instance when envAppDSN is set,
// else the tests.
func TestMain(m *testing.M) {
	if dsn := os.Getenv(envAppDSN); dsn != "" {
		if err := runAppInstance(dsn); err != nil {
			fmt.Fprintln(os.Stderr, "app instance:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runAppInstance serves topoHandler on 127.0.0.1 (printing "listening on
// ADDR" on stdout), running RunCleanup, logging at debug level on stderr,
// until its stdin closes: a test that dies takes its instances with it.
func runAppInstance(dsn string) error {
	interval, err := time.ParseDuration(os.Getenv(envAppCleanup))
	if err != nil {
		return fmt.Errorf("%s: %w", envAppCleanup, err)
	}
	db, err := sqlx.Open(os.Getenv(envAppDriver), dsn)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	b := pgsession.NewPostgresBackend(db, pgsession.WithTable(os.Getenv(envAppTable)), pgsession.WithQueryTimeout(2*time.Second))
	defer b.Close()
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{make([]byte, 32)},
		Cookie: pgsession.CookieConfig{Insecure: true},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		return fmt.Errorf("new: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: m.Middleware(http.HandlerFunc(topoHandler)), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	janitor := make(chan error, 1)
	go func() { janitor <- m.RunCleanup(ctx, interval) }()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	<-janitor
	return nil
}

// appInstance is a running app process.
type appInstance struct {
	name  string
	url   *url.URL
	cmd   *exec.Cmd
	stdin io.Closer
	logs  *pgtest.LogBuffer
	done  chan error
}

// startInstances starts n app instances on dsn (driver, table), each
// sweeping every interval, stopped when t ends.
func startInstances(t *testing.T, n int, driver, dsn, table string, interval time.Duration) []*appInstance {
	t.Helper()
	var apps []*appInstance
	for i := range n {
		a := &appInstance{name: randomName(fmt.Sprintf("pgsession_app%d_", i)), logs: &pgtest.LogBuffer{}, done: make(chan error, 1)}
		a.cmd = exec.Command(os.Args[0], "-test.run=^$")
		a.cmd.Env = append(os.Environ(), envAppDSN+"="+withApp(dsn, a.name), envAppDriver+"="+driver,
			envAppTable+"="+table, envAppCleanup+"="+interval.String())
		a.cmd.Stderr = a.logs
		stdout, err := a.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if a.stdin, err = a.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := a.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { a.done <- a.cmd.Wait() }()
		t.Cleanup(func() { a.stop(t) })
		addr := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if s, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
					addr <- s
				}
			}
		}()
		select {
		case s := <-addr:
			a.url = &url.URL{Scheme: "http", Host: s}
		case <-time.After(30 * time.Second):
			t.Fatalf("instance %d did not start:\n%s", i, a.logs)
		}
		apps = append(apps, a)
	}
	return apps
}

// stop ends the instance (closing its stdin) and waits for it.
func (a *appInstance) stop(t *testing.T) {
	if a.stdin == nil {
		return
	}
	_ = a.stdin.Close()
	a.stdin = nil
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("instance %s: %v\n%s", a.name, err, a.logs)
		}
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		t.Errorf("instance %s did not stop within 15s", a.name)
	}
}

// roundRobin serves a reverse proxy that sends each request to the next
// instance.
func roundRobin(t *testing.T, apps []*appInstance) *httptest.Server {
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(apps[next.Add(1)%uint64(len(apps))].url)
	}}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

// sqlCleanupLockHolders counts the connections holding the cleanup lock of
// the quoted table $1: the transaction-scoped advisory lock (1886610285,
// hashtext(table)) each cleanup batch takes.
const sqlCleanupLockHolders = `SELECT count(*) FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1886610285
		AND l.objid = (hashtext($1)::bigint & 4294967295)::oid`

// removedRE matches a sweep's log line.
var removedRE = regexp.MustCompile(`msg="pgsession: cleanup" removed=(\d+)`)

// Three app processes behind a round-robin reverse proxy share one
// PostgreSQL through a PgBouncer in transaction mode ($PGSESSION_MULTI_DSN
// instead, if set), each running
// RunCleanup every 50ms while the test keeps adding expired sessions. The
// clients' checks hold across instances (no lost single-writer update, no
// resurrected key), the expired rows all go and are counted once, and
// never do two instances' cleanup statements run at once (sampled in
// pg_stat_activity).
func TestMultiInstance(t *testing.T) {
	heavy(t)
	d := 3 * time.Second
	if longRun() {
		d = 30 * time.Second
	}
	dsnOf := func(string) string { return os.Getenv("PGSESSION_MULTI_DSN") }
	if dsnOf("") == "" {
		bouncer := pgtest.NewPgBouncer(t)
		dsnOf = func(driver string) string {
			if driver == "pgx" {
				return bouncer.URL("default_query_exec_mode=exec")
			}
			return bouncer.URL("")
		}
	}
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			dsn := dsnOf(driver)
			admin := pgtest.Open(t, "postgres")
			table := pgtest.Schema(t, admin) + ".sessions"
			if err := pgsession.NewPostgresBackend(admin, pgsession.WithTable(table)).Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			apps := startInstances(t, 3, driver, dsn, table, 50*time.Millisecond)
			front := roundRobin(t, apps)
			k := newTopoChecker(t, func() string { return front.URL }, 30*time.Second)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var bg sync.WaitGroup
			var seeded atomic.Int64
			bg.Go(func() { // expired sessions keep coming: 1,500 every 100ms
				for batch := 0; ctx.Err() == nil && batch < 10_000; batch++ {
					res, err := admin.ExecContext(ctx, `INSERT INTO `+table+` (key_hash, data, created_at, accessed_at)
						SELECT sha256(convert_to($1 || i, 'UTF8')), '{}', now() - interval '10 hours', now() - interval '9 hours'
						FROM generate_series(1, 1500) AS i`, randomName("batch"))
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("seed: %v", err)
						}
						return
					}
					n, _ := res.RowsAffected()
					seeded.Add(n)
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			})
			// Sample the cleanup lock (the transaction-scoped advisory lock
			// each batch takes, keyed by the table): how often an instance
			// holds it, and whether two ever do.
			var samples, busy, overlap atomic.Int64
			schema, base, _ := strings.Cut(table, ".")
			lockTable := pq.QuoteIdentifier(schema) + "." + pq.QuoteIdentifier(base)
			bg.Go(func() {
				for ctx.Err() == nil {
					var held int
					err := admin.GetContext(ctx, &held, sqlCleanupLockHolders, lockTable)
					if err != nil {
						return
					}
					samples.Add(1)
					if held > 0 {
						busy.Add(1)
					}
					if held > 1 {
						overlap.Add(1)
					}
					time.Sleep(2 * time.Millisecond)
				}
			})
			cs := k.run(8, d, 1<<20, nil)
			cancel()
			bg.Wait()

			// The last seeded rows go at the next sweeps.
			deadline := time.Now().Add(10 * time.Second)
			for pgtest.Count(t, admin, `SELECT count(*) FROM `+table+` WHERE accessed_at < now() - interval '8 hours'`) > 0 {
				if time.Now().After(deadline) {
					t.Fatal("expired sessions left 10s after the load")
				}
				time.Sleep(50 * time.Millisecond)
			}
			k.settle(cs, 10*time.Second)
			for _, a := range apps {
				a.stop(t)
			}
			removed, sweeps, skipped := 0, []string{}, 0
			for _, a := range apps {
				logs := a.logs.String()
				n, s := 0, 0
				for _, m := range removedRE.FindAllStringSubmatch(logs, -1) {
					r, _ := strconv.Atoi(m[1])
					n += r
					s++
				}
				removed += n
				skipped += strings.Count(logs, "cleanup skipped")
				sweeps = append(sweeps, fmt.Sprintf("%d sweeps removed %d", s, n))
				if strings.Contains(logs, "cleanup failed") || strings.Contains(logs, "level=ERROR") {
					t.Errorf("instance %s logged errors:\n%s", a.name, logs)
				}
			}
			t.Logf("FIGURES multi-instance %s, 3 instances, %v: %s; seeded %d expired, removed %v (skipped %d rounds); "+
				"%d samples of the cleanup lock, %d saw it held, %d held twice",
				driver, d, k.summary(), seeded.Load(), sweeps, skipped, samples.Load(), busy.Load(), overlap.Load())
			k.report(t)
			if int64(removed) != seeded.Load() {
				t.Errorf("the janitors removed %d expired sessions, %d were seeded", removed, seeded.Load())
			}
			if overlap.Load() != 0 {
				t.Errorf("of %d samples, %d saw the cleanup lock held twice", samples.Load(), overlap.Load())
			}
			// A lock stranded on a pooled connection would be held, by an
			// idle connection, at every look; one caught between its
			// statement's end and the view's update is not.
			stranded := map[int]int{}
			for range 5 {
				var pids []int
				if err := admin.Select(&pids, `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
					WHERE a.state <> 'active' AND l.locktype = 'advisory' AND l.granted AND l.classid = 1886610285
						AND l.objid = (hashtext($1)::bigint & 4294967295)::oid`, lockTable); err != nil {
					t.Fatal(err)
				}
				for _, pid := range pids {
					stranded[pid]++
				}
				time.Sleep(20 * time.Millisecond)
			}
			for pid, n := range stranded {
				if n == 5 {
					t.Errorf("connection %d holds the cleanup lock while idle: stranded", pid)
				}
			}
			if busy.Load() == 0 {
				t.Errorf("none of %d samples saw a sweep holding the cleanup lock: the check saw nothing", samples.Load())
			}
			if k.acks.Load() == 0 || seeded.Load() == 0 {
				t.Error("the test exercised too little")
			}
		})
	}
}
