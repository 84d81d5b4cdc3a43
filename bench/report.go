package main

import (
	"fmt"
	"html"
	"math"
	"runtime"
	"strings"
)

// markdown renders the results as a table, with the run's settings.
func markdown(results []result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sessions per implementation, %d concurrent clients, %v measured per cell (after %v warm-up), %s on %d CPUs.\n\n",
		o.sessions, o.clients, o.duration, o.warmup, runtime.Version(), runtime.NumCPU())
	b.WriteString("| implementation | workload | req/s | p50 ms | p99 ms | errors | rows written/req | index scans/req | vs floor | vs scs | vs hello |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %d | %.3f | %.3f | %s | %s | %s |\n",
			r.Impl, r.Workload, r.RPS, r.P50, r.P99, r.Errors, r.WritesPerOp, r.ScansPerOp, ratio(r.VsFloor), ratio(r.VsSCS), ratio(r.VsHello))
	}
	return b.String()
}

func ratio(x float64) string {
	if x == 0 || math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

// svg renders two grouped bar charts (requests per second, rows written per
// request) by workload and implementation.
func svg(results []result, o options) string {
	colors := map[string]string{"pgsession": "#2b6cb0", "scs": "#dd6b20", "floor": "#718096", "hello": "#38a169"}
	const (
		width, panelH, top, left, barW, gap = 900, 260, 40, 70, 28, 30
	)
	var b strings.Builder
	height := top + 2*(panelH+60) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">pgsession load benchmark: %d clients, %v per cell, %d sessions</text>`+"\n",
		left, o.clients, o.duration, o.sessions)
	panel := func(y0 int, title string, value func(result) float64, format string) {
		maxV := 0.0
		for _, r := range results {
			maxV = math.Max(maxV, value(r))
		}
		if maxV == 0 {
			maxV = 1
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, y0-8, html.EscapeString(title))
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, y0+panelH, width-20, y0+panelH)
		x := left + 10
		for _, w := range o.workloads {
			groupStart := x
			for _, im := range o.impls {
				for _, r := range results {
					if r.Impl != im || r.Workload != w {
						continue
					}
					h := int(float64(panelH-20) * value(r) / maxV)
					fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
						x, y0+panelH-h, barW, h, colors[im], im, w, fmt.Sprintf(format, value(r)))
					fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="9" text-anchor="middle">%s</text>`+"\n",
						x+barW/2, y0+panelH-h-3, fmt.Sprintf(format, value(r)))
					x += barW + 2
				}
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (groupStart+x)/2, y0+panelH+16, w)
			x += gap
		}
	}
	panel(top+20, "requests per second (higher is better)", func(r result) float64 { return r.RPS }, "%.0f")
	panel(top+20+panelH+60, "rows written per request (lower is better)", func(r result) float64 { return r.WritesPerOp }, "%.2f")
	x := left
	for _, im := range o.impls {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, height-22, colors[im], x+16, height-12, im)
		x += 110
	}
	b.WriteString("</svg>\n")
	return b.String()
}
