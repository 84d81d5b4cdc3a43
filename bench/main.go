// Command bench measures pgsession against alexedwards/scs, a hand-written
// floor and a bare net/http handler, on one PostgreSQL, over real HTTP on
// loopback, in one run. See README.md.
//
//	cd bench && go run . -duration 10s
//
// It is a module of its own, so from the repository root use
// "go -C bench run . -duration 10s"; "go run ./bench" does not work there.
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
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
)

// result is one implementation under one workload.
type result struct {
	Impl        string  `json:"impl"`
	Workload    string  `json:"workload"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	RPS         float64 `json:"requests_per_second"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	WritesPerOp float64 `json:"rows_written_per_request"`
	ScansPerOp  float64 `json:"index_scans_per_request"`
	VsFloor     float64 `json:"rps_vs_floor,omitempty"`
	VsSCS       float64 `json:"rps_vs_scs,omitempty"`
	VsHello     float64 `json:"rps_vs_hello,omitempty"`
}

type options struct {
	url                string
	duration, warmup   time.Duration
	sessions, clients  int
	impls, workloads   []string
	jsonPath, svgPath  string
	maxRequestsPerCell int
}

func main() {
	var o options
	var impls, workloads string
	smoke := flag.Bool("smoke", false, "a quick check that every implementation and workload runs without errors (1s cells, 200 sessions); timings mean nothing")
	flag.StringVar(&o.url, "database-url", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL URL")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per implementation and workload")
	flag.IntVar(&o.sessions, "sessions", 10000, "sessions created in each implementation before the load")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients")
	flag.IntVar(&o.maxRequestsPerCell, "max-requests", 5_000_000, "stop a cell after this many requests")
	flag.StringVar(&impls, "impls", "pgsession,scs,floor,hello", "implementations")
	flag.StringVar(&workloads, "workloads", "read,write,anonymous,login,mixed", "workloads")
	flag.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.svgPath, "svg", "", "also write a bar chart of the results as SVG to this file")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (servers and load) to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *smoke {
		o.duration, o.sessions = time.Second, 200
	}
	o.warmup = min(o.duration/5, 2*time.Second)
	o.impls, o.workloads = strings.Split(impls, ","), strings.Split(workloads, ",")
	results, err := run(context.Background(), o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\n%s\n", markdown(results, o))
	if o.jsonPath != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(o.jsonPath, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if o.svgPath != "" {
		if err := os.WriteFile(o.svgPath, []byte(svg(results, o)), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	for _, r := range results {
		if r.Errors > 0 {
			pprof.StopCPUProfile()
			log.Fatalf("%s/%s: %d errors", r.Impl, r.Workload, r.Errors)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var builders = map[string]func(context.Context, *sqlx.DB) (*impl, error){
	"pgsession": newPgsession, "scs": newSCS, "floor": newFloor, "hello": newHello,
}

// run measures every implementation under every workload, each in a schema
// of its own that is dropped afterwards.
func run(ctx context.Context, o options) ([]result, error) {
	admin, err := sqlx.Open("postgres", o.url)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w", o.url, err)
	}
	var version string
	_ = admin.QueryRowContext(ctx, "SHOW server_version").Scan(&version)
	log.Printf("PostgreSQL %s; %d sessions per implementation, %d clients, %v per cell; %s, %d CPUs",
		version, o.sessions, o.clients, o.duration, runtime.Version(), runtime.NumCPU())
	var results []result
	for _, name := range o.impls {
		build, ok := builders[name]
		if !ok {
			return nil, fmt.Errorf("unknown implementation %q", name)
		}
		rs, err := runImpl(ctx, o, admin, name, build)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, rs...)
	}
	ratios(results)
	return results, nil
}

func runImpl(ctx context.Context, o options, admin *sqlx.DB, name string, build func(context.Context, *sqlx.DB) (*impl, error)) ([]result, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "bench_" + name + "_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		return nil, err
	}
	defer func() { _, _ = admin.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE") }()
	// The pool finds its own "sessions" table through search_path, and its
	// server processes by application_name.
	db, err := sqlx.Open("postgres", withParams(o.url, "search_path="+schema, "application_name="+schema))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(o.clients)
	db.SetMaxIdleConns(o.clients)
	im, err := build(ctx, db)
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: im.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients, MaxConnsPerHost: o.clients}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	// Pre-create the sessions through the app itself: /write without a
	// cookie creates one holding n=1.
	cookies := make([]string, o.sessions)
	if im.cookieName != "" {
		if err := parallel(o.clients, o.sessions, func(i int) error {
			var err error
			var body string
			cookies[i], body, err = request(client, base+"/write", "", im.cookieName)
			if err == nil && (cookies[i] == "" || body != "1") {
				err = fmt.Errorf("/write without a cookie answered %q with cookie %q, want 1 and a new session", body, cookies[i])
			}
			return err
		}); err != nil {
			return nil, fmt.Errorf("create sessions: %w", err)
		}
	}
	// Every session holds n=1 now; each client tracks the counters of the
	// sessions it owns and checks every answer against them.
	want := make([]int, len(cookies))
	for i := range want {
		want[i] = 1
	}
	var results []result
	for _, w := range o.workloads {
		if im.cookieName == "" && w != "anonymous" {
			// Without a session every route is the same bare handler: its
			// one row, under anonymous, is the ceiling of the HTTP stack.
			continue
		}
		r, err := measure(ctx, o, admin, db, schema, im, client, base, cookies, want, w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w, err)
		}
		log.Printf("%-9s %-9s %8.0f req/s  p50 %.2fms  p99 %.2fms  errors %d  writes/req %.3f",
			r.Impl, r.Workload, r.RPS, r.P50, r.P99, r.Errors, r.WritesPerOp)
		results = append(results, r)
	}
	return results, nil
}

func withParams(url string, params ...string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + strings.Join(params, "&")
}

// measure runs one workload: a warm-up, then the measured window; the
// database counters cover both, divided by all their requests.
func measure(ctx context.Context, o options, admin, db *sqlx.DB, schema string, im *impl, client *http.Client, base string, cookies []string, want []int, workload string) (result, error) {
	res := result{Impl: im.name, Workload: workload}
	sumBefore, _, err := sum(ctx, im)
	if err != nil {
		return res, err
	}
	if err := flush(ctx, admin, db, schema, o.clients); err != nil {
		return res, err
	}
	w0, s0, err := tableStats(ctx, admin, schema)
	if err != nil {
		return res, err
	}

	var (
		total, errs, writes atomic.Int64
		mu                  sync.Mutex
		latencies           []float64
		measuring           atomic.Bool
		logged              atomic.Int64
	)
	// fail counts a failed request, logging the first few of the cell.
	fail := func(format string, args ...any) {
		errs.Add(1)
		if logged.Add(1) <= 10 {
			log.Printf("%s/%s: "+format, append([]any{im.name, workload}, args...)...)
		}
	}
	deadline := time.Now().Add(o.warmup + o.duration)
	time.AfterFunc(o.warmup, func() { measuring.Store(true) })
	var start, end atomic.Int64
	var wg sync.WaitGroup
	for c := range o.clients {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(c), uint64(len(workload))))
			var mine []float64
			for time.Now().Before(deadline) && total.Add(1) <= int64(o.maxRequestsPerCell) {
				path := pick(workload, rng)
				// Each client owns the sessions i ≡ c (mod clients): one writer
				// per session, so every increment must be stored.
				i := c + o.clients*rng.IntN(max(1, (len(cookies)-c+o.clients-1)/o.clients))
				cookie := ""
				if path != "/anon" && len(cookies) > 0 && i < len(cookies) {
					cookie = cookies[i]
				}
				t0 := time.Now()
				got, body, err := request(client, base+path, cookie, im.cookieName)
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
					if body != expect {
						fail("%s: session %d answered %q, want %q", path, i, body, expect)
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
	if err := flush(ctx, admin, db, schema, o.clients); err != nil {
		return res, err
	}
	w1, s1, err := tableStats(ctx, admin, schema)
	if err != nil {
		return res, err
	}
	requests := int(min(total.Load(), int64(o.maxRequestsPerCell))) - int(errs.Load())
	res.Requests, res.Errors = len(latencies), int(errs.Load())
	if window := time.Duration(end.Load() - start.Load()); window > 0 {
		res.RPS = float64(len(latencies)) / window.Seconds()
	}
	slices.Sort(latencies)
	res.P50, res.P99 = quantile(latencies, 0.50), quantile(latencies, 0.99)
	if requests > 0 {
		res.WritesPerOp = float64(w1-w0) / float64(requests)
		res.ScansPerOp = float64(s1-s0) / float64(requests)
	}
	// No lost writes: with one writer per session, the stored counters grew
	// by exactly the number of successful /write requests; and no session
	// was lost or created (a rotation replaces its row).
	if im.sum != nil {
		sumAfter, rows, err := sum(ctx, im)
		if err != nil {
			return res, err
		}
		if got := sumAfter - sumBefore; got != int(writes.Load()) {
			res.Errors++
			log.Printf("%s/%s: LOST WRITES: counters grew by %d, %d writes succeeded", im.name, workload, got, writes.Load())
		}
		if rows != len(cookies) {
			res.Errors++
			log.Printf("%s/%s: %d sessions stored, want %d", im.name, workload, rows, len(cookies))
		}
	}
	return res, nil
}

func sum(ctx context.Context, im *impl) (total, rows int, err error) {
	if im.sum == nil {
		return 0, 0, nil
	}
	return im.sum(ctx)
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
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

// flush makes PostgreSQL publish the pool's table counters: a server
// process reports them when it exits, so close the pool's connections and
// wait for the processes to go.
func flush(ctx context.Context, admin, db *sqlx.DB, schema string, idle int) error {
	db.SetMaxIdleConns(0)
	defer db.SetMaxIdleConns(idle)
	for range 100 {
		var n int
		if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, schema).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
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

// ratios fills each result's throughput relative to floor, scs and hello under
// the same workload.
func ratios(results []result) {
	rps := map[[2]string]float64{}
	for _, r := range results {
		rps[[2]string{r.Impl, r.Workload}] = r.RPS
	}
	for i := range results {
		r := &results[i]
		if f := rps[[2]string{"floor", r.Workload}]; f > 0 {
			r.VsFloor = r.RPS / f
		}
		if s := rps[[2]string{"scs", r.Workload}]; s > 0 {
			r.VsSCS = r.RPS / s
		}
		if h := rps[[2]string{"hello", r.Workload}]; h > 0 {
			r.VsHello = r.RPS / h
		}
	}
}
