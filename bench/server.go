package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
)

// Each implementation's server runs in a process of its own: the bench
// binary re-executed with -serve, so that the process's CPU time
// (getrusage RUSAGE_SELF, user + system) is the server's alone, apart from
// the load generator's. Besides the app it serves, under /_bench/:
//
//	rusage  the process's user+system CPU time so far, in nanoseconds
//	sum     the total of the stored counters and the number of sessions
//	idle    ?n= sets the pool's idle connections (0 closes them, so their
//	        server processes publish their table counters)
//
// It prints "LISTEN host:port" on stdout when it is ready, and exits when
// its standard input closes (the parent ended).

// serveArgs are the child's flags.
type serveArgs struct {
	impl, dsn, table, prefix string
	conns                    int
	profile                  string // a CPU profile of the server to write, or ""
}

// exitHook runs before the child exits (it stops the CPU profile).
var exitHook = func() {}

// startProfile starts a CPU profile written to path, and returns its stop.
func startProfile(path string) func() {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		})
	}
}

// serve is the child process: it builds the implementation and serves it.
func serve(a serveArgs) error {
	sp, ok := specByName(a.impl)
	if !ok {
		return fmt.Errorf("unknown implementation %q", a.impl)
	}
	ctx := context.Background()
	e := env{table: a.table, prefix: a.prefix}
	if a.dsn != "" {
		driver := "postgres"
		if sp.driver != "" {
			driver = sp.driver
		}
		db, err := sqlx.Open(driver, a.dsn)
		if err != nil {
			return err
		}
		db.SetMaxOpenConns(a.conns)
		db.SetMaxIdleConns(a.conns)
		e.db = db
	}
	im, err := sp.build(ctx, e)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", im.handler)
	mux.HandleFunc("/_bench/rusage", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, cpuTime().Nanoseconds())
	})
	mux.HandleFunc("/_bench/sum", func(w http.ResponseWriter, r *http.Request) {
		if im.sum == nil {
			fmt.Fprint(w, "0 0")
			return
		}
		total, rows, err := im.sum(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, total, " ", rows)
	})
	mux.HandleFunc("/_bench/idle", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if e.db != nil {
			e.db.SetMaxIdleConns(n)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		exitHook()
		os.Exit(0)
	}()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// server is the parent's handle on a child server process.
type server struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	base   string // http://host:port
	prefix string // its Redis keys, removed when it stops
}

// startServer starts the child process serving a.
func startServer(a serveArgs) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", a.impl, "-serve-dsn", a.dsn, "-serve-table", a.table,
		"-serve-prefix", a.prefix, "-serve-conns", strconv.Itoa(a.conns), "-serve-cpuprofile", a.profile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, stdin: stdin}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
		if !ok {
			s.stop()
			return nil, fmt.Errorf("server %s did not start (said %q)", a.impl, line)
		}
		s.base = "http://" + addr
		return s, nil
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, fmt.Errorf("server %s did not start within a minute", a.impl)
	}
}

// stop ends the child: its standard input closes, then a kill if needed.
func (s *server) stop() {
	_ = s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// get fetches a /_bench/ endpoint of the server.
func (s *server) get(client *http.Client, path string) (string, error) {
	resp, err := client.Get(s.base + "/_bench/" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/_bench/%s: status %d: %s", path, resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b)), err
}

// cpu returns the server process's CPU time so far.
func (s *server) cpu(client *http.Client) (time.Duration, error) {
	v, err := s.get(client, "rusage")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return time.Duration(n), err
}

// sum returns the total of the server's stored counters and its sessions.
func (s *server) sum(client *http.Client) (total, rows int, err error) {
	v, err := s.get(client, "sum")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscan(v, &total, &rows); err != nil {
		return 0, 0, fmt.Errorf("/_bench/sum answered %q: %w", v, err)
	}
	return total, rows, nil
}

func init() {
	log.SetFlags(log.Ltime)
}
