package main

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
)

// report is everything one run measured.
type report struct {
	Machine string       `json:"machine"`
	Command string       `json:"command"`
	Cells   []cell       `json:"cells"`
	Growth  []growthRow  `json:"growth,omitempty"`
	Cleanup *cleanupRow  `json:"cleanup,omitempty"`
	Pad     []padRow     `json:"data_size,omitempty"`
	Insn    []insnResult `json:"instructions,omitempty"`
}

func (r *report) errors() int {
	n := 0
	for _, c := range r.Cells {
		n += c.Errors
	}
	for _, g := range r.Growth {
		n += g.Errors
	}
	for _, p := range r.Pad {
		n += p.Errors
	}
	if r.Cleanup != nil {
		n += r.Cleanup.Errors
	}
	return n
}

// machine names the machine a run measured: CPU model, cores, PostgreSQL
// and Go versions.
func machine(ctx context.Context, admin *sqlx.DB) string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var version string
	_ = admin.QueryRowContext(ctx, "SHOW server_version").Scan(&version)
	return fmt.Sprintf("%s, %d cores (shared by server, load generator and PostgreSQL), PostgreSQL %s, %s",
		model, runtime.NumCPU(), strings.Fields(version + " ?")[0], runtime.Version())
}

// summary is one implementation under one workload over its rounds.
type summary struct {
	impl, workload                 string
	rounds, errors                 int
	rps, p50, p99, cpu, writes, sc float64 // medians
}

func (r *report) summaries(o options) []summary {
	var out []summary
	for _, w := range o.workloads {
		for _, sp := range specs {
			var cs []cell
			for _, c := range r.Cells {
				if c.Impl == sp.name && c.Workload == w {
					cs = append(cs, c)
				}
			}
			if len(cs) == 0 {
				continue
			}
			s := summary{impl: sp.name, workload: w, rounds: len(cs)}
			med := func(f func(cell) float64) float64 {
				v := make([]float64, len(cs))
				for i, c := range cs {
					v[i] = f(c)
				}
				return median(v)
			}
			for _, c := range cs {
				s.errors += c.Errors
			}
			s.rps = med(func(c cell) float64 { return c.RPS })
			s.p50 = med(func(c cell) float64 { return c.P50 })
			s.p99 = med(func(c cell) float64 { return c.P99 })
			s.cpu = med(func(c cell) float64 { return c.CPUPerReq })
			s.writes = med(func(c cell) float64 { return c.WritesPerOp })
			s.sc = med(func(c cell) float64 { return c.ScansPerOp })
			out = append(out, s)
		}
	}
	return out
}

// ratio is the median, min and max over rounds of a's req/s divided by
// b's in the same round.
type ratio struct {
	med, lo, hi float64
	n           int
}

func (r *report) ratio(a, b, workload string) ratio {
	rps := map[[2]any]float64{}
	for _, c := range r.Cells {
		if c.Workload == workload {
			rps[[2]any{c.Impl, c.Round}] = c.RPS
		}
	}
	var v []float64
	for _, c := range r.Cells {
		if c.Impl == a && c.Workload == workload {
			if d := rps[[2]any{b, c.Round}]; d > 0 {
				v = append(v, c.RPS/d)
			}
		}
	}
	if len(v) == 0 {
		return ratio{}
	}
	return ratio{med: median(v), lo: slices.Min(v), hi: slices.Max(v), n: len(v)}
}

func (x ratio) String() string {
	if x.n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", x.med, x.lo, x.hi)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// target is one of issue 14's goals.
type target struct {
	what, a, b, workload string
	min                  float64
}

var targets = []target{
	{"read, direct, recommended configuration ≥ 0.95× the strict floor", recommendedDirect, "floor-strict", "read", 0.95},
	{"read through PgBouncer (transaction mode), recommended configuration ≥ 0.9× the floor there", recommendedPooler, "floor-bouncer", "read", 0.90},
	{"write ≥ 0.85× the floor", recommendedDirect, "floor", "write", 0.85},
	{"login ≥ 0.9× the floor", recommendedDirect, "floor", "login", 0.90},
	{"anonymous ≥ 0.95× hello", recommendedDirect, "hello", "anonymous", 0.95},
}

// markdown renders the results as tables, with the run's settings.
func markdown(r *report, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s.\n\n", r.Machine)
	fmt.Fprintf(&b, "Command: `%s`. %d sessions per implementation, %d concurrent clients, %d interleaved rounds of %v cells (after a %v warm-up each).\n\n",
		r.Command, o.sessions, o.clients, o.rounds, o.duration, o.warmup)
	b.WriteString("Medians over the rounds; each ratio is the median of the per-round ratios, with their range (min–max). Server CPU is the server process's user+system time over the cell's measured requests (each implementation's server runs in a process of its own).\n\n")
	b.WriteString("| workload | implementation | req/s | p50 ms | p99 ms | server CPU µs/req | rows written/req | index scans/req | errors | vs | ratio (min–max) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, s := range r.summaries(o) {
		rf := ref(s.impl, s.workload)
		rt := "–"
		if rf != s.impl {
			rt = r.ratio(s.impl, rf, s.workload).String()
		} else {
			rf = ""
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %.1f | %s | %s | %d | %s | %s |\n",
			s.workload, s.impl, s.rps, s.p50, s.p99, s.cpu, stat(s.writes), stat(s.sc), s.errors, rf, rt)
	}
	b.WriteString("\nTargets (median of the per-round ratios):\n\n| target | ratio (min–max) | met |\n|---|---:|---|\n")
	for _, t := range targets {
		x := r.ratio(t.a, t.b, t.workload)
		met := "–"
		if x.n > 0 {
			met = map[bool]string{true: "yes", false: "**no**"}[x.med >= t.min]
		}
		fmt.Fprintf(&b, "| %s (%s / %s) | %s | %s |\n", t.what, t.a, t.b, x, met)
	}
	fmt.Fprintf(&b, "\npgsession against its peers (req/s ratio, median of the per-round ratios):\n\n| workload | %[1]s / scs | %[1]s / scs-redis |\n|---|---:|---:|\n", recommendedDirect)
	for _, w := range o.workloads {
		if w == "anonymous" {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", w, r.ratio(recommendedDirect, "scs", w), r.ratio(recommendedDirect, "scs-redis", w))
	}
	growthMarkdown(&b, r)
	return b.String()
}

func stat(x float64) string {
	if x < 0 || math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.3f", x)
}

// svg renders a chart of the medians: requests per second by workload and
// implementation, and server CPU per request.
func svg(r *report, o options) string {
	colors := map[string]string{"pgsession": "#90cdf4", "pgsession-prepared": "#4299e1", "pgsession-driver": "#2b6cb0", "pgsession-bouncer": "#b794f4",
		"pgsession-prepared-bouncer": "#6b46c1", "scs": "#dd6b20", "scs-redis": "#e53e3e", "floor": "#718096",
		"floor-strict": "#2d3748", "floor-bouncer": "#a0aec0", "hello": "#38a169"}
	const (
		width, panelH, top, left, barW, gap = 1100, 240, 60, 60, 16, 24
	)
	sums := r.summaries(o)
	var b strings.Builder
	height := top + 2*(panelH+60) + 60
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">pgsession load benchmark: %d clients, %d interleaved rounds of %v, %d sessions (medians)</text>`+"\n",
		left, o.clients, o.rounds, o.duration, o.sessions)
	fmt.Fprintf(&b, `<text x="%d" y="38" font-size="11">%s</text>`+"\n", left, html.EscapeString(r.Machine))
	panel := func(y0 int, title string, value func(summary) float64, format string) {
		maxV := 0.0
		for _, s := range sums {
			if v := value(s); !math.IsNaN(v) {
				maxV = math.Max(maxV, v)
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, y0-8, html.EscapeString(title))
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, y0+panelH, width-20, y0+panelH)
		x := left + 10
		for _, w := range o.workloads {
			groupStart := x
			for _, s := range sums {
				if s.workload != w {
					continue
				}
				v := value(s)
				if math.IsNaN(v) {
					v = 0
				}
				h := int(float64(panelH-20) * v / maxV)
				label := fmt.Sprintf(format, v)
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
					x, y0+panelH-h, barW, h, colors[s.impl], s.impl, w, label)
				fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="8" text-anchor="middle">%s</text>`+"\n", x+barW/2, y0+panelH-h-3, label)
				x += barW + 2
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (groupStart+x)/2, y0+panelH+16, w)
			x += gap
		}
	}
	panel(top+20, "requests per second (higher is better)", func(s summary) float64 { return s.rps }, "%.0f")
	panel(top+20+panelH+60, "server CPU µs per request (lower is better)", func(s summary) float64 { return s.cpu }, "%.0f")
	x, y := left, height-34
	for _, sp := range specs {
		if !slices.Contains(o.impls, sp.name) {
			continue
		}
		if x > width-150 {
			x, y = left, y+18
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, y, colors[sp.name], x+16, y+10, sp.name)
		x += 40 + 7*len(sp.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
