// Command bench measures pgsession against its peers (alexedwards/scs with
// its PostgreSQL and its Redis store), a hand-written floor and a bare
// net/http handler, on one PostgreSQL, over real HTTP on loopback, in one
// run. See README.md.
//
//	cd bench && go run . -duration 5s -rounds 5
//
// It is a module of its own, so from the repository root use
// "go -C bench run . -duration 5s"; "go run ./bench" does not work there.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// spec is one implementation as the benchmark runs it.
type spec struct {
	name   string
	build  func(context.Context, env) (*impl, error)
	via    string // "direct", "pgbouncer" (transaction mode), "redis" or "" (no store)
	params string // added to the pool's DSN
	driver string // the pool's database/sql driver: "" for lib/pq ("postgres"), "pgx" for pgx's stdlib
	unix   bool   // direct over the server's Unix socket (-unix-socket) instead of the URL's TCP address
	cookie string // the session cookie's name; "" keeps no session
	raw    bool   // /read answers the stored JSON untouched
	loads  []string
	about  string
}

var allLoads = []string{"read", "write", "anonymous", "login", "mixed"}

// specs are the implementations, in the order of the tables.
var specs = []spec{
	{name: "pgsession", build: newPgsession(), via: "direct", cookie: pgsession.DefaultCookieName, loads: allLoads,
		about: "this library as the quick start builds it: the default statement mode (driver prepared statements on this proven direct connection), default timeouts"},
	{name: "pgsession-prepared", build: newPgsession(pgsession.WithPreparedStatements()), via: "direct", cookie: pgsession.DefaultCookieName, loads: allLoads,
		about: "this library with WithPreparedStatements (SQL PREPARE/EXECUTE, forced even on a direct connection)"},
	{name: "pgsession-driver", build: newPgsession(pgsession.WithDriverPreparedStatements()), via: "direct", cookie: pgsession.DefaultCookieName, loads: allLoads,
		about: "this library with WithDriverPreparedStatements (the driver's prepared statements, forced: the default's choice here)"},
	{name: "pgsession-bouncer", build: newPgsession(), via: "pgbouncer", cookie: pgsession.DefaultCookieName, loads: []string{"read", "write"},
		about: "pgsession, default mode (which picks SQL PREPARE/EXECUTE there), through PgBouncer (transaction mode)"},
	{name: "pgsession-prepared-bouncer", build: newPgsession(pgsession.WithPreparedStatements()), via: "pgbouncer", cookie: pgsession.DefaultCookieName,
		loads: []string{"read", "write"}, about: "pgsession with WithPreparedStatements through PgBouncer (transaction mode)"},
	{name: "scs", build: newSCS, via: "direct", cookie: "session", loads: allLoads,
		about: "alexedwards/scs v2 with postgresstore, IdleTimeout 8h, Lifetime 30 days"},
	{name: "scs-redis", build: newSCSRedis, via: "redis", cookie: "session", loads: allLoads,
		about: "alexedwards/scs v2 with redisstore (redigo), Redis on loopback, same timeouts"},
	{name: "floor", build: newFloor(false, true), via: "direct", cookie: floorCookie, loads: allLoads,
		about: "no library: one prepared SELECT per request, JSON decoded; prepared UPDATE/INSERT/DELETE…INSERT to write; unsigned cookie"},
	{name: "floor-strict", build: newFloor(true, true), via: "direct", cookie: floorCookie, raw: true, loads: []string{"read"},
		about: "the strict floor: the prepared SELECT's bytes answered untouched (no signature check, no JSON decode)"},
	{name: "floor-bouncer", build: newFloor(true, false), via: "pgbouncer", params: "binary_parameters=yes", cookie: floorCookie, raw: true,
		loads: []string{"read"}, about: "the strict floor through PgBouncer: the same SELECT unprepared, parameters in the same message (lib/pq binary_parameters=yes)"},
	{name: "pgsession-unix", build: newPgsession(), via: "direct", unix: true, cookie: pgsession.DefaultCookieName, loads: []string{"read"},
		about: "pgsession, default configuration, lib/pq over the server's Unix socket (proven direct by SO_PEERCRED: the driver's prepared statements)"},
	{name: "floor-strict-unix", build: newFloor(true, true), via: "direct", unix: true, cookie: floorCookie, raw: true, loads: []string{"read"},
		about: "the strict floor over the server's Unix socket (lib/pq)"},
	{name: "pgsession-pgx", build: newPgsession(), via: "direct", driver: "pgx", cookie: pgsession.DefaultCookieName, loads: []string{"read"},
		about: "pgsession, default configuration, pgx's stdlib over TCP with pgx's defaults (proven direct: the driver's prepared statements)"},
	{name: "floor-strict-pgx", build: newFloor(true, true), via: "direct", driver: "pgx", cookie: floorCookie, raw: true, loads: []string{"read"},
		about: "the strict floor on pgx's stdlib over TCP, pgx's defaults"},
	{name: "hello", build: newHello, loads: []string{"anonymous"},
		about: "the app with no session middleware (/anon through the same ServeMux): the ceiling for an anonymous request"},
}

func specByName(name string) (spec, bool) {
	for _, s := range specs {
		if s.name == name {
			return s, true
		}
	}
	return spec{}, false
}

// ref is the implementation a row's throughput is compared with.
func ref(impl, workload string) string {
	switch {
	case workload == "anonymous":
		return "hello"
	case workload == "read" && strings.HasSuffix(impl, "-bouncer"):
		return "floor-bouncer"
	case workload == "read" && strings.HasSuffix(impl, "-unix"):
		return "floor-strict-unix" // the same stack
	case workload == "read" && strings.HasSuffix(impl, "-pgx"):
		return "floor-strict-pgx"
	case workload == "read":
		return "floor-strict"
	}
	return "floor"
}

// The configurations the README recommends: the default, directly and
// through PgBouncer.
const (
	recommendedDirect = "pgsession"
	recommendedPooler = "pgsession-bouncer"
)

type options struct {
	url                string
	unixSocket         string
	duration, warmup   time.Duration
	rounds             int
	sessions, clients  int
	pool               int
	impls, workloads   []string
	jsonPath, svgPath  string
	profileDir         string
	maxRequestsPerCell int
	scale              []int
	padSizes           []int
	cleanupRows        int
	insn               bool
	smoke              bool
}

func main() {
	var o options
	var a serveArgs
	flag.StringVar(&a.impl, "serve", "", "internal: serve this implementation (the child process)")
	flag.StringVar(&a.dsn, "serve-dsn", "", "internal")
	flag.StringVar(&a.table, "serve-table", "", "internal")
	flag.StringVar(&a.prefix, "serve-prefix", "", "internal")
	flag.IntVar(&a.conns, "serve-conns", 32, "internal")
	serveProfile := flag.String("serve-cpuprofile", "", "internal")

	var impls, workloads, scale, pads string
	flag.BoolVar(&o.smoke, "smoke", false, "a quick check that every implementation and workload runs without errors (short cells, 2 rounds, 200 sessions, small scale steps); timings mean nothing")
	flag.StringVar(&o.url, "database-url", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL URL")
	flag.StringVar(&o.unixSocket, "unix-socket", "/var/run/postgresql", "the server's Unix socket directory, for the *-unix implementations")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per cell (one implementation, one workload, one round)")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds per workload: A, B, C, A, B, C …")
	flag.IntVar(&o.sessions, "sessions", 10000, "sessions created in each implementation before the load")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients")
	flag.IntVar(&o.pool, "pool", 8, "database connections of each server's pool, and PgBouncer's server connections (PostgreSQL's max_connections bounds the sum: direct pools hold none between cells)")
	flag.IntVar(&o.maxRequestsPerCell, "max-requests", 5_000_000, "stop a cell after this many requests")
	flag.StringVar(&impls, "impls", names(), "implementations")
	flag.StringVar(&workloads, "workloads", strings.Join(allLoads, ","), "workloads")
	flag.StringVar(&scale, "scale", "", "stored-session counts for the growth measurement, e.g. 10000,100000,1000000 (\"\" skips it)")
	flag.StringVar(&pads, "pad", "", "session data sizes in bytes for the data-size sweep, e.g. 100,1000,10000,65000 (\"\" skips it)")
	flag.IntVar(&o.cleanupRows, "cleanup", 0, "expired rows for the cleanup measurement, e.g. 1000000 (0 skips it)")
	flag.BoolVar(&o.insn, "insn", false, "also count instructions per request (reads, writes, anonymous) with valgrind --tool=callgrind (see insn_test.go)")
	flag.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.svgPath, "svg", "", "also write a chart of the results as SVG to this file")
	flag.StringVar(&o.profileDir, "profile", "", "write a CPU profile of each server process to DIR/IMPL.pprof")
	flag.Parse()
	if a.impl != "" {
		if *serveProfile != "" {
			stop := startProfile(*serveProfile)
			defer stop()
			exitHook = stop
		}
		if err := serve(a); err != nil {
			log.Fatalf("serve %s: %v", a.impl, err)
		}
		return
	}
	if o.smoke {
		o.duration, o.rounds, o.sessions = 300*time.Millisecond, 2, 200
		if scale == "" {
			scale = "1000,3000"
		}
		if pads == "" {
			pads = "100,65000"
		}
		if o.cleanupRows == 0 {
			o.cleanupRows = 3000
		}
	}
	o.warmup = min(o.duration/5, 2*time.Second)
	o.impls, o.workloads = strings.Split(impls, ","), strings.Split(workloads, ",")
	var err error
	if o.scale, err = ints(scale); err == nil {
		o.padSizes, err = ints(pads)
	}
	if err != nil {
		log.Fatal(err)
	}
	rep, err := run(context.Background(), o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\n%s\n", markdown(rep, o))
	if o.jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonPath, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if o.svgPath != "" {
		if err := os.WriteFile(o.svgPath, []byte(svg(rep, o)), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if n := rep.errors(); n > 0 {
		log.Fatalf("%d errors", n)
	}
}

func names() string {
	var n []string
	for _, s := range specs {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}

func ints(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// cell is one implementation under one workload in one round.
type cell struct {
	Impl      string  `json:"impl"`
	Workload  string  `json:"workload"`
	Round     int     `json:"round"`
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	RPS       float64 `json:"requests_per_second"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	CPUPerReq float64 `json:"server_cpu_us_per_request"`
	// Rows written and index scans per request, from pg_stat_user_tables;
	// -1 where not measured (Redis, PgBouncer).
	WritesPerOp float64 `json:"rows_written_per_request"`
	ScansPerOp  float64 `json:"index_scans_per_request"`
}

// running is one implementation's server and the client state of its
// sessions.
type running struct {
	spec    spec
	srv     *server
	client  *http.Client
	schema  string // "" without PostgreSQL
	table   string
	stats   bool // pg_stat_user_tables counters are measured
	cookies []string
	want    []int
}

// run starts every implementation, measures the workloads in interleaved
// rounds, then the growth measurements, and stops everything.
func run(ctx context.Context, o options) (*report, error) {
	admin, err := sqlx.Open("postgres", o.url)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w", o.url, err)
	}
	rep := &report{Machine: machine(ctx, admin), Command: strings.TrimSpace("cd bench && go run . " + strings.Join(os.Args[1:], " "))}
	log.Printf("%s; %d sessions per implementation, %d clients, %v per cell, %d rounds", rep.Machine, o.sessions, o.clients, o.duration, o.rounds)

	var bouncer *pgtest.PgBouncer
	var rs []*running
	defer func() {
		for _, r := range rs {
			r.stop(admin)
		}
		if bouncer != nil {
			bouncer.Stop()
		}
	}()
	for _, name := range o.impls {
		sp, ok := specByName(name)
		if !ok {
			return nil, fmt.Errorf("unknown implementation %q (have %s)", name, names())
		}
		if sp.unix {
			if socks, _ := filepath.Glob(filepath.Join(o.unixSocket, ".s.PGSQL.*")); len(socks) == 0 {
				log.Printf("%-26s SKIPPED: no PostgreSQL Unix socket in %s (-unix-socket)", sp.name, o.unixSocket)
				continue
			}
		}
		if sp.via == "pgbouncer" && bouncer == nil {
			var err error
			if bouncer, err = pgtest.StartPgBouncer(o.url, o.pool); err != nil {
				return nil, err
			}
		}
		r, err := start(ctx, o, admin, bouncer, sp)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rs = append(rs, r)
	}
	for _, w := range o.workloads {
		for round := range o.rounds {
			// Rotate the order each round, so no implementation always
			// follows the same one.
			for i := range rs {
				r := rs[(i+round)%len(rs)]
				if !slices.Contains(r.spec.loads, w) {
					continue
				}
				c, err := measure(ctx, o, admin, r, w, round)
				if err != nil {
					return nil, fmt.Errorf("%s/%s: %w", r.spec.name, w, err)
				}
				log.Printf("round %d %-26s %-9s %8.0f req/s  p99 %6.2fms  cpu %6.1fµs/req  errors %d",
					round+1, c.Impl, c.Workload, c.RPS, c.P99, c.CPUPerReq, c.Errors)
				rep.Cells = append(rep.Cells, c)
			}
		}
	}
	if err := growth(ctx, o, admin, rs, rep); err != nil {
		return nil, err
	}
	if o.insn {
		if rep.Insn, err = instructions(o.url); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// newSchemaName returns a random name for an implementation's schema (and
// its Redis key prefix and application_name): short, as a table name has
// at most 40 bytes.
func newSchemaName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "bench_" + hex.EncodeToString(b)
}

// start creates an implementation's schema, starts its server and creates
// its sessions through the app.
func start(ctx context.Context, o options, admin *sqlx.DB, bouncer *pgtest.PgBouncer, sp spec) (*running, error) {
	id := newSchemaName()
	r := &running{spec: sp}
	a := serveArgs{impl: sp.name, conns: o.pool}
	switch sp.via {
	case "direct", "pgbouncer":
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+id); err != nil {
			return nil, err
		}
		r.schema, r.table = id, id+".sessions"
		a.table = r.table
		// The pool's server processes are found by application_name.
		params := []string{"search_path=" + id, "application_name=" + id}
		a.dsn = withParams(o.url, params...)
		r.stats = true
		if sp.via == "pgbouncer" {
			a.dsn = bouncer.URL("application_name=" + id)
			r.stats = false // PgBouncer keeps its server connections open
		}
		if sp.unix {
			a.dsn = withParams(a.dsn, "host="+o.unixSocket)
		}
		if sp.params != "" {
			a.dsn = withParams(a.dsn, sp.params)
		}
	case "redis":
		a.prefix = "pgsession-bench:" + id + ":"
	}
	if o.profileDir != "" {
		a.profile = o.profileDir + "/" + sp.name + ".pprof"
	}
	var err error
	if r.srv, err = startServer(a); err != nil {
		r.stop(admin)
		return nil, err
	}
	r.srv.prefix = a.prefix
	r.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients, MaxConnsPerHost: o.clients}, Timeout: 30 * time.Second}
	// Pre-create the sessions through the app itself: /write without a
	// cookie creates one holding n=1.
	if sp.cookie != "" {
		r.cookies = make([]string, o.sessions)
		if err := parallel(o.clients, o.sessions, func(i int) error {
			var err error
			var body string
			r.cookies[i], body, err = request(r.client, r.srv.base+"/write", "", sp.cookie)
			if err == nil && (r.cookies[i] == "" || body != "1") {
				err = fmt.Errorf("/write without a cookie answered %q with cookie %q, want 1 and a new session", body, r.cookies[i])
			}
			return err
		}); err != nil {
			r.stop(admin)
			return nil, fmt.Errorf("create sessions: %w", err)
		}
	}
	if r.stats {
		if err := r.flush(ctx, admin); err != nil { // hold no connections between cells
			r.stop(admin)
			return nil, err
		}
	}
	// Every session holds n=1 now; each client tracks the counters of the
	// sessions it owns and checks every answer against them.
	r.want = make([]int, len(r.cookies))
	for i := range r.want {
		r.want[i] = 1
	}
	log.Printf("%-26s started, %d sessions", sp.name, len(r.cookies))
	return r, nil
}

// stop ends the server and removes its schema or keys.
func (r *running) stop(admin *sqlx.DB) {
	if r.srv != nil {
		r.srv.stop()
		if r.srv.prefix != "" {
			if err := dropRedisPrefix(r.srv.prefix); err != nil {
				log.Printf("%s: remove Redis keys %s*: %v", r.spec.name, r.srv.prefix, err)
			}
		}
	}
	if r.schema != "" {
		_, _ = admin.Exec("DROP SCHEMA " + r.schema + " CASCADE")
	}
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
}

func withParams(url string, params ...string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + strings.Join(params, "&")
}

// measure runs one cell: a warm-up, then the measured window. The database
// counters cover both, divided by all their requests; the server's CPU
// time covers the measured window, divided by its requests.
func measure(ctx context.Context, o options, admin *sqlx.DB, r *running, workload string, round int) (cell, error) {
	return load(ctx, o, admin, r, workload, round, nil)
}

// load is measure with an optional action run during the measured window
// (the cleanup); the window then lasts until both the duration has passed
// and the action has returned.
func load(ctx context.Context, o options, admin *sqlx.DB, r *running, workload string, round int, during func() error) (cell, error) {
	res := cell{Impl: r.spec.name, Workload: workload, Round: round + 1, WritesPerOp: -1, ScansPerOp: -1}
	sumBefore, _, err := r.srv.sum(r.client)
	if err != nil {
		return res, err
	}
	var w0, s0 int64
	if r.stats {
		if err := r.flush(ctx, admin); err != nil {
			return res, err
		}
		if w0, s0, err = tableStats(ctx, admin, r.schema); err != nil {
			return res, err
		}
		if _, err := r.srv.get(r.client, "idle?n="+strconv.Itoa(o.pool)); err != nil {
			return res, err
		}
	}

	var (
		total, errs, writes atomic.Int64
		mu                  sync.Mutex
		latencies           []float64
		measuring, stop     atomic.Bool
		logged              atomic.Int64
		cpu0                time.Duration
		duringErr           error
	)
	fail := func(format string, args ...any) {
		errs.Add(1)
		if logged.Add(1) <= 10 {
			log.Printf("%s/%s: "+format, append([]any{r.spec.name, workload}, args...)...)
		}
	}
	// A cell never outlasts its time, even with an action still running,
	// beyond a hard limit of ten minutes.
	hard := time.Now().Add(o.warmup + o.duration + 10*time.Minute)
	var actionDone sync.WaitGroup
	time.AfterFunc(o.warmup, func() {
		cpu0, _ = r.srv.cpu(r.client)
		measuring.Store(true)
		if during != nil {
			actionDone.Go(func() { duringErr = during() })
		}
		time.AfterFunc(o.duration, func() {
			actionDone.Wait()
			stop.Store(true)
		})
	})
	var start, end atomic.Int64
	var wg sync.WaitGroup
	cookies, want := r.cookies, r.want
	for c := range o.clients {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(c), uint64(round*31+len(workload))))
			var mine []float64
			for !stop.Load() && time.Now().Before(hard) && total.Add(1) <= int64(o.maxRequestsPerCell) {
				path := pick(workload, rng)
				// Each client owns the sessions i ≡ c (mod clients): one writer
				// per session, so every increment must be stored.
				i := c + o.clients*rng.IntN(max(1, (len(cookies)-c+o.clients-1)/o.clients))
				cookie := ""
				if path != "/anon" && i < len(cookies) {
					cookie = cookies[i]
				}
				t0 := time.Now()
				got, body, err := request(r.client, r.srv.base+path, cookie, r.spec.cookie)
				d := time.Since(t0)
				if err != nil {
					fail("%s: %v", path, err)
					continue
				}
				if path == "/write" {
					writes.Add(1)
				}
				if got != "" && cookie != "" {
					cookies[i] = got // rotated
				}
				// The answer must show the session's own counter: a session
				// lost, replaced or read stale shows up here at once.
				if cookie != "" {
					expect := strconv.Itoa(want[i])
					switch path {
					case "/write":
						want[i]++
						expect = strconv.Itoa(want[i])
					case "/login":
						expect = "ok"
					}
					if path == "/read" && r.spec.raw {
						body = rawCounter(body)
					}
					if body != expect {
						fail("%s: session %d answered %.80q, want %q", path, i, body, expect)
						continue
					}
				}
				if measuring.Load() {
					start.CompareAndSwap(0, t0.UnixNano())
					end.Store(time.Now().UnixNano())
					mine = append(mine, float64(d.Microseconds())/1000)
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	actionDone.Wait()
	if duringErr != nil {
		return res, duringErr
	}
	cpu1, err := r.srv.cpu(r.client)
	if err != nil {
		return res, err
	}
	requests := int(min(total.Load(), int64(o.maxRequestsPerCell))) - int(errs.Load())
	res.Requests, res.Errors = len(latencies), int(errs.Load())
	if window := time.Duration(end.Load() - start.Load()); window > 0 {
		res.RPS = float64(len(latencies)) / window.Seconds()
	}
	if len(latencies) > 0 {
		res.CPUPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(len(latencies))
	}
	slices.Sort(latencies)
	res.P50, res.P99 = quantile(latencies, 0.50), quantile(latencies, 0.99)
	if r.stats {
		if err := r.flush(ctx, admin); err != nil {
			return res, err
		}
		w1, s1, err := tableStats(ctx, admin, r.schema)
		if err != nil {
			return res, err
		}
		if requests > 0 {
			res.WritesPerOp = float64(w1-w0) / float64(requests)
			res.ScansPerOp = float64(s1-s0) / float64(requests)
		}
	}
	// No lost writes: with one writer per session, the stored counters grew
	// by exactly the number of successful /write requests; and no session
	// was lost or created (a rotation replaces its row).
	if r.spec.cookie != "" {
		sumAfter, rows, err := r.srv.sum(r.client)
		if err != nil {
			return res, err
		}
		if got := sumAfter - sumBefore; got != int(writes.Load()) {
			res.Errors++
			log.Printf("%s/%s: LOST WRITES: counters grew by %d, %d writes succeeded", r.spec.name, workload, got, writes.Load())
		}
		if rows < len(cookies) {
			res.Errors++
			log.Printf("%s/%s: %d sessions stored, want at least %d", r.spec.name, workload, rows, len(cookies))
		}
	}
	return res, nil
}

// rawCounter returns the counter n of a stored JSON object, as text.
func rawCounter(body string) string {
	var v struct{ N *int }
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.N == nil {
		return body
	}
	return strconv.Itoa(*v.N)
}

// pick returns the route a workload's next request takes.
func pick(workload string, rng *mrand.Rand) string {
	switch workload {
	case "read":
		return "/read"
	case "write":
		return "/write"
	case "anonymous":
		return "/anon"
	case "login":
		return "/login"
	}
	switch p := rng.IntN(100); { // mixed
	case p < 90:
		return "/read"
	case p < 99:
		return "/write"
	default:
		return "/login"
	}
}

// request GETs url with the session cookie (a "name=value" pair, or "") and
// returns the new session cookie the response set, if any, and the body.
func request(client *http.Client, url, cookie, cookieName string) (setCookie, body string, err error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", "", err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	body = strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %d: %.100s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == cookieName && c.Value != "" {
			return c.Name + "=" + c.Value, body, nil
		}
	}
	return "", body, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && first.Load() == nil; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// flush makes PostgreSQL publish the server's table counters: a server
// process reports them when it exits, so the server closes its pool's
// connections (and keeps none idle until the next cell) and we wait for
// their processes to go.
func (r *running) flush(ctx context.Context, admin *sqlx.DB) error {
	if _, err := r.srv.get(r.client, "idle?n=0"); err != nil {
		return err
	}
	for range 200 {
		var n int
		if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, r.schema).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			time.Sleep(30 * time.Millisecond)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("the pool's connections did not close")
}

// tableStats returns the rows written and index scans of the schema's
// sessions table so far.
func tableStats(ctx context.Context, admin *sqlx.DB, schema string) (writes, scans int64, err error) {
	if _, err := admin.ExecContext(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return 0, 0, err
	}
	err = admin.QueryRowContext(ctx, `SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0), COALESCE(sum(COALESCE(idx_scan, 0) + seq_scan), 0)
		FROM pg_stat_user_tables WHERE schemaname = $1`, schema).Scan(&writes, &scans)
	return writes, scans, err
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}
