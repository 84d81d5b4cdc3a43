package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pgsession/pgsession"
)

// Cost as the work grows, measured on the recommended direct configuration
// (and the strict floor for the data-size sweep):
//
//   - stored sessions (-scale): the table is padded to each size with rows
//     inserted directly by SQL (random keys nobody requests; the load still
//     uses the -sessions sessions created through the app), then read and
//     write cells run;
//   - cleanup (-cleanup): that many expired rows are inserted, then
//     Manager.DeleteExpired removes them in its bounded batches while a read
//     load runs; its total time and the load's p99 are reported against a
//     read cell just before;
//   - data size (-pad): the first sessions get a value of each size, and
//     read cells of pgsession and the strict floor run on those sessions.

type growthRow struct {
	Stored   int     `json:"stored_sessions"`
	Workload string  `json:"workload"`
	RPS      float64 `json:"requests_per_second"`
	P99      float64 `json:"p99_ms"`
	CPU      float64 `json:"server_cpu_us_per_request"`
	Errors   int     `json:"errors"`
}

type cleanupRow struct {
	Rows        int     `json:"expired_rows"`
	Deleted     int     `json:"deleted"`
	Seconds     float64 `json:"seconds"`
	BaselineP99 float64 `json:"read_p99_ms_before"`
	DuringP99   float64 `json:"read_p99_ms_during"`
	BaselineRPS float64 `json:"read_rps_before"`
	DuringRPS   float64 `json:"read_rps_during"`
	Errors      int     `json:"errors"`
}

type padRow struct {
	Bytes  int     `json:"bytes"`
	Impl   string  `json:"impl"`
	RPS    float64 `json:"requests_per_second"`
	P99    float64 `json:"p99_ms"`
	CPU    float64 `json:"server_cpu_us_per_request"`
	Errors int     `json:"errors"`
}

func find(rs []*running, name string) *running {
	for _, r := range rs {
		if r.spec.name == name {
			return r
		}
	}
	return nil
}

func growth(ctx context.Context, o options, admin *sqlx.DB, rs []*running, rep *report) error {
	if len(o.scale) == 0 && o.cleanupRows == 0 && len(o.padSizes) == 0 {
		return nil
	}
	r := find(rs, recommendedDirect)
	if r == nil {
		log.Printf("growth measurements skipped: they run on %s, which is not among -impls", recommendedDirect)
		return nil
	}
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	filled := 0
	// fill inserts n rows with random keys, accessed ago.
	fill := func(n int, ago time.Duration) error {
		for done := 0; done < n; {
			k := min(n-done, 100_000) // bounded statements
			_, err := admin.ExecContext(ctx, `INSERT INTO `+r.table+` (key_hash, data, created_at, accessed_at)
				SELECT sha256(convert_to($1 || g::text, 'UTF8')), '{"n":0}', now() - $2::interval, now() - $2::interval
				FROM generate_series($3::int, $4::int) g`, hex.EncodeToString(salt), fmt.Sprintf("%d seconds", int(ago.Seconds())), filled+1, filled+k)
			if err != nil {
				return fmt.Errorf("insert %d rows: %w", k, err)
			}
			filled += k
			done += k
		}
		_, err := admin.ExecContext(ctx, "VACUUM ANALYZE "+r.table)
		return err
	}
	for _, size := range o.scale {
		var have int
		if err := admin.GetContext(ctx, &have, "SELECT count(*) FROM "+r.table); err != nil {
			return err
		}
		if size < have {
			log.Printf("scale %d skipped: the table holds %d sessions already", size, have)
			continue
		}
		t0 := time.Now()
		if err := fill(size-have, 0); err != nil {
			return err
		}
		log.Printf("scale: %s holds %d sessions (%d inserted in %v)", r.table, size, size-have, time.Since(t0).Round(time.Millisecond))
		for _, w := range []string{"read", "write"} {
			c, err := measure(ctx, o, admin, r, w, 0)
			if err != nil {
				return fmt.Errorf("scale %d %s: %w", size, w, err)
			}
			log.Printf("scale %8d %-5s %8.0f req/s  p99 %6.2fms  cpu %6.1fµs/req", size, w, c.RPS, c.P99, c.CPUPerReq)
			rep.Growth = append(rep.Growth, growthRow{Stored: size, Workload: w, RPS: c.RPS, P99: c.P99, CPU: c.CPUPerReq, Errors: c.Errors})
		}
	}
	if o.cleanupRows > 0 {
		var before int
		if err := admin.GetContext(ctx, &before, "SELECT count(*) FROM "+r.table); err != nil {
			return err
		}
		t0 := time.Now()
		if err := fill(o.cleanupRows, 9*time.Hour); err != nil { // past the 8h idle timeout
			return err
		}
		log.Printf("cleanup: %d expired rows inserted in %v", o.cleanupRows, time.Since(t0).Round(time.Millisecond))
		base, err := measure(ctx, o, admin, r, "read", 0)
		if err != nil {
			return err
		}
		db, err := sqlx.Open("postgres", o.url)
		if err != nil {
			return err
		}
		defer db.Close()
		m, err := newManager(pgsession.NewPostgresBackend(db, pgsession.WithTable(r.table), pgsession.WithPreparedStatements()))
		if err != nil {
			return err
		}
		row := &cleanupRow{Rows: o.cleanupRows, BaselineP99: base.P99, BaselineRPS: base.RPS, Errors: base.Errors}
		during, err := load(ctx, o, admin, r, "read", 0, func() error {
			t := time.Now()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			n, err := m.DeleteExpired(ctx)
			row.Deleted, row.Seconds = n, time.Since(t).Seconds()
			return err
		})
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		row.DuringP99, row.DuringRPS = during.P99, during.RPS
		row.Errors += during.Errors
		var after int
		if err := admin.GetContext(ctx, &after, "SELECT count(*) FROM "+r.table); err != nil {
			return err
		}
		if row.Deleted != o.cleanupRows || after != before {
			row.Errors++
			log.Printf("cleanup deleted %d of %d expired rows; %d rows left, want %d", row.Deleted, o.cleanupRows, after, before)
		}
		log.Printf("cleanup: %d rows in %.1fs; read p99 %.2fms before, %.2fms during", row.Deleted, row.Seconds, row.BaselineP99, row.DuringP99)
		rep.Cleanup = row
	}
	if len(o.padSizes) > 0 {
		pads := []*running{r}
		if f := find(rs, "floor-strict"); f != nil {
			pads = append(pads, f)
		}
		for _, size := range o.padSizes {
			for _, p := range pads {
				sub := *p // the first sessions only, to bound the data written
				k := min(len(p.cookies), 1000)
				sub.cookies, sub.want = p.cookies[:k], p.want[:k]
				if err := parallel(o.clients, k, func(i int) error {
					got, body, err := request(sub.client, sub.srv.base+"/pad?bytes="+strconv.Itoa(size), sub.cookies[i], sub.spec.cookie)
					if err == nil && body != strconv.Itoa(sub.want[i]) {
						err = fmt.Errorf("/pad answered %.80q, want %d", body, sub.want[i])
					}
					if got != "" {
						sub.cookies[i] = got
					}
					return err
				}); err != nil {
					return fmt.Errorf("pad %d bytes on %s: %w", size, p.spec.name, err)
				}
			}
			for round := range min(o.rounds, 3) {
				for _, p := range pads {
					sub := *p
					k := min(len(p.cookies), 1000)
					sub.cookies, sub.want = p.cookies[:k], p.want[:k]
					c, err := measure(ctx, o, admin, &sub, "read", round)
					if err != nil {
						return fmt.Errorf("pad %d bytes on %s: %w", size, p.spec.name, err)
					}
					log.Printf("pad %6d B %-20s %8.0f req/s  p99 %6.2fms  cpu %6.1fµs/req", size, p.spec.name, c.RPS, c.P99, c.CPUPerReq)
					rep.Pad = append(rep.Pad, padRow{Bytes: size, Impl: p.spec.name, RPS: c.RPS, P99: c.P99, CPU: c.CPUPerReq, Errors: c.Errors})
				}
			}
		}
	}
	return nil
}

func growthMarkdown(b *strings.Builder, r *report) {
	if len(r.Growth) > 0 {
		fmt.Fprintf(b, "\nStored sessions (%s; one cell each; the load uses the sessions created through the app, the rest are rows inserted by SQL):\n\n", recommendedDirect)
		b.WriteString("| stored sessions | workload | req/s | p99 ms | server CPU µs/req |\n|---:|---|---:|---:|---:|\n")
		for _, g := range r.Growth {
			fmt.Fprintf(b, "| %d | %s | %.0f | %.2f | %.1f |\n", g.Stored, g.Workload, g.RPS, g.P99, g.CPU)
		}
	}
	if c := r.Cleanup; c != nil {
		fmt.Fprintf(b, "\nCleanup: Manager.DeleteExpired removed %d of %d expired rows (batches of 1,000) in %.1f s while a read load ran: p99 %.2f ms during against %.2f ms just before, %.0f req/s against %.0f.\n",
			c.Deleted, c.Rows, c.Seconds, c.DuringP99, c.BaselineP99, c.DuringRPS, c.BaselineRPS)
	}
	if len(r.Pad) > 0 {
		b.WriteString("\nSession data size (read cells on 1,000 sessions holding a value of that size; medians of up to 3 interleaved rounds):\n\n")
		b.WriteString("| bytes | implementation | req/s | p99 ms | server CPU µs/req |\n|---:|---|---:|---:|---:|\n")
		type key struct {
			bytes int
			impl  string
		}
		var order []key
		vals := map[key][][3]float64{}
		for _, p := range r.Pad {
			k := key{p.Bytes, p.Impl}
			if _, ok := vals[k]; !ok {
				order = append(order, k)
			}
			vals[k] = append(vals[k], [3]float64{p.RPS, p.P99, p.CPU})
		}
		for _, k := range order {
			var m [3]float64
			for i := range m {
				var v []float64
				for _, x := range vals[k] {
					v = append(v, x[i])
				}
				m[i] = median(v)
			}
			fmt.Fprintf(b, "| %d | %s | %.0f | %.2f | %.1f |\n", k.bytes, k.impl, m[0], m[1], m[2])
		}
	}
	if len(r.Insn) > 0 {
		b.WriteString("\nInstructions per request on the Go side (valgrind --tool=callgrind, GOGC=off, GOMAXPROCS=1; the difference of two loop lengths, so setup cancels out):\n\n| benchmark | instructions/request |\n|---|---:|\n")
		for _, x := range r.Insn {
			fmt.Fprintf(b, "| %s | %.0f |\n", x.Name, x.PerOp)
		}
	}
}
