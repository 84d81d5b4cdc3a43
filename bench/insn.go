package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// insnResult is the instructions per request of one Go benchmark loop.
type insnResult struct {
	Name  string  `json:"benchmark"`
	PerOp float64 `json:"instructions_per_request"`
}

// insnBenchmarks are the loops of insn_test.go that -insn counts.
// The BenchmarkReadPostgres and BenchmarkWritePostgres loops (postgres_test.go) include the
// driver and database/sql (the database's own work is another process, not counted).
var insnBenchmarks = []string{"BenchmarkReadPgsessionMemory", "BenchmarkReadPgsessionFixed", "BenchmarkReadFloorFixed", "BenchmarkReadFloorStrictFixed",
	"BenchmarkReadPostgres/" + recommendedDirect, "BenchmarkReadPostgres/floor", "BenchmarkReadPostgres/floor-strict",
	"BenchmarkWritePostgres/" + recommendedDirect, "BenchmarkWritePostgres/floor",
	"BenchmarkLoginPostgres/" + recommendedDirect, "BenchmarkLoginPostgres/floor",
	"BenchmarkAnonPgsession", "BenchmarkAnonHello"}

// instructions counts the instructions per request of each loop of
// insn_test.go under valgrind --tool=callgrind: it runs each loop for two
// lengths and divides the difference of the totals by the difference of
// the lengths, so the binary's start and the benchmark's setup cancel out.
// GOGC=off (no collection during the loop, so the count does not depend on
// when one happens; allocations are reported separately by -benchmem),
// GOMAXPROCS=1 and asyncpreemptoff=1 make the count repeatable; cpu.rdtscp=off keeps
// the runtime off RDTSCP, which valgrind 3.19 cannot run (SIGILL on CPUs that have it).
func instructions(databaseURL string) ([]insnResult, error) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return nil, errors.New("-insn needs valgrind (apt-get install valgrind)")
	}
	dir, err := os.MkdirTemp("", "pgsession-bench-insn-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bench.test")
	if out, err := exec.Command("go", "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go test -c: %w: %s", err, out)
	}
	const short, long = 2000, 12000
	var out []insnResult
	for _, name := range insnBenchmarks {
		var total [2]float64
		for i, n := range []int{short, long} {
			if total[i], err = callgrind(bin, databaseURL, name, n); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		r := insnResult{Name: name, PerOp: (total[1] - total[0]) / (long - short)}
		log.Printf("%-32s %8.0f instructions/request", name, r.PerOp)
		out = append(out, r)
	}
	return out, nil
}

var collected = regexp.MustCompile(`Collected : (\d+)`)

// callgrind returns the instructions the benchmark name ("Benchmark" or
// "Benchmark/sub") executes with n iterations.
func callgrind(bin, databaseURL, name string, n int) (float64, error) {
	pattern := "^" + strings.ReplaceAll(name, "/", "$/^") + "$"
	cmd := exec.Command("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", bin,
		"-test.run", "^$", "-test.bench", pattern, "-test.benchtime", strconv.Itoa(n)+"x")
	cmd.Env = append(os.Environ(), "GOGC=off", "GOMAXPROCS=1", "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off", "DATABASE_URL="+databaseURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("valgrind: %w: %s", err, lastLines(string(out), 10))
	}
	m := collected.FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("valgrind printed no total: %s", lastLines(string(out), 10))
	}
	return strconv.ParseFloat(m[1], 64)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
