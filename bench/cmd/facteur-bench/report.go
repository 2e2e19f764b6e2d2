package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
)

// cmdReport turns results.jsonl (and idle.jsonl) into markdown tables: one
// row per MTA and case (the mean of its repetitions), a ratio row
// facteur/Postfix under each pair, and every run in a second table.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("results", "", "results.jsonl")
	idle := fs.String("idle", "", "idle.jsonl (optional)")
	all := fs.Bool("all-runs", false, "print every run instead of the summary")
	fs.Parse(args)
	var rs []result
	if err := readJSONL(*in, func(b []byte) error {
		var r result
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		rs = append(rs, r)
		return nil
	}); err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	if *all {
		allRuns(w, rs)
		return nil
	}
	summary(w, rs)
	if *idle != "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| idle connections | sources | banners ok | failed | still open after hold | RSS before MiB | RSS held MiB | PSS held MiB | KiB per connection | threads |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		readJSONL(*idle, func(b []byte) error { //nolint:errcheck
			var m map[string]any
			if json.Unmarshal(b, &m) != nil {
				return nil
			}
			f := func(k string) float64 { v, _ := m[k].(float64); return v }
			fmt.Fprintf(w, "| %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.0f |\n",
				f("connections"), f("sources"), f("banner_ok"), f("failed"), f("alive_after_hold"),
				f("rss_before_kib")/1024, f("rss_held_kib")/1024, f("pss_held_kib")/1024, f("rss_per_conn_kib"), f("threads"))
			return nil
		})
	}
	return nil
}

func readJSONL(path string, f func([]byte) error) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if err := f([]byte(l)); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

type caseKey struct {
	kase, loader   string
	size, sessions int
}

// agg is the mean of one MTA's runs of one case.
type agg struct {
	runs, incomplete                                int
	e2e, recv, p50, p99, mcpu, pcpu, rssMiB, pssMiB float64
	lat                                             int // runs with a latency
}

func aggregate(rs []result) agg {
	var a agg
	for _, r := range rs {
		a.runs++
		if !r.Complete {
			a.incomplete++
		}
		a.e2e += r.E2ERate
		a.recv += r.ReceiveRate
		a.mcpu += r.MTACPUms
		a.pcpu += r.PGCPUms
		a.rssMiB += float64(r.PeakRSSKiB) / 1024
		a.pssMiB += float64(r.PeakPSSKiB) / 1024
		if r.LatP50ms >= 0 {
			a.lat++
			a.p50 += r.LatP50ms
			a.p99 += r.LatP99ms
		}
	}
	n := float64(max(1, a.runs))
	a.e2e, a.recv, a.mcpu, a.pcpu, a.rssMiB, a.pssMiB = a.e2e/n, a.recv/n, a.mcpu/n, a.pcpu/n, a.rssMiB/n, a.pssMiB/n
	if a.lat > 0 {
		a.p50 /= float64(a.lat)
		a.p99 /= float64(a.lat)
	}
	return a
}

func sizeName(b int) string {
	if b%1024 == 0 {
		return fmt.Sprintf("%d KiB", b/1024)
	}
	return fmt.Sprintf("%d B", b)
}

func summary(w *bufio.Writer, rs []result) {
	groups := map[caseKey]map[string][]result{}
	var keys []caseKey
	for _, r := range rs {
		k := caseKey{r.Case, r.Loader, r.Size, r.Sessions}
		if groups[k] == nil {
			groups[k] = map[string][]result{}
			keys = append(keys, k)
		}
		groups[k][r.MTA] = append(groups[k][r.MTA], r)
	}
	slices.SortFunc(keys, func(a, b caseKey) int {
		if c := strings.Compare(a.kase, b.kase); c != 0 {
			return c
		}
		if c := strings.Compare(a.loader, b.loader); c != 0 {
			return c
		}
		if a.size != b.size {
			return a.size - b.size
		}
		return a.sessions - b.sessions
	})
	fmt.Fprintln(w, "| case | loader | size | sessions | MTA | runs | end-to-end msg/s | receive msg/s | latency p50 ms | latency p99 ms | MTA CPU ms/msg | PostgreSQL CPU ms/msg | total CPU ms/msg | peak RSS MiB | peak PSS MiB |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	lat := func(a agg, v float64) string {
		if a.lat == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f", v)
	}
	for _, k := range keys {
		var ag = map[string]agg{}
		mtas := []string{}
		for m := range groups[k] {
			mtas = append(mtas, m)
		}
		// postfix first, then facteur, then anything else.
		slices.SortFunc(mtas, func(a, b string) int { return mtaOrder(a) - mtaOrder(b) })
		for _, m := range mtas {
			a := aggregate(groups[k][m])
			ag[m] = a
			runs := fmt.Sprint(a.runs)
			if a.incomplete > 0 {
				runs += fmt.Sprintf(" (%d incomplete)", a.incomplete)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %.0f | %.0f | %s | %s | %.2f | %.2f | %.2f | %.0f | %.0f |\n",
				k.kase, k.loader, sizeName(k.size), k.sessions, m, runs, a.e2e, a.recv, lat(a, a.p50), lat(a, a.p99),
				a.mcpu, a.pcpu, a.mcpu+a.pcpu, a.rssMiB, a.pssMiB)
		}
		p, okp := ag["postfix"]
		f, okf := ag["facteur"]
		if okp && okf {
			ratio := func(x, y float64) string {
				if y == 0 {
					return "–"
				}
				return fmt.Sprintf("×%.2f", x/y)
			}
			lr := func(x, y float64) string {
				if f.lat == 0 || p.lat == 0 {
					return "–"
				}
				return ratio(x, y)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | **facteur/Postfix** | | **%s** | %s | %s | **%s** | %s | %s | %s | %s | %s |\n",
				k.kase, k.loader, sizeName(k.size), k.sessions, ratio(f.e2e, p.e2e), ratio(f.recv, p.recv),
				lr(f.p50, p.p50), lr(f.p99, p.p99), ratio(f.mcpu, p.mcpu), ratio(f.pcpu, p.pcpu),
				ratio(f.mcpu+f.pcpu, p.mcpu+p.pcpu), ratio(f.rssMiB, p.rssMiB), ratio(f.pssMiB, p.pssMiB))
		}
	}
}

func mtaOrder(m string) int {
	switch m {
	case "postfix":
		return 0
	case "facteur":
		return 1
	}
	return 2
}

func allRuns(w *bufio.Writer, rs []result) {
	fmt.Fprintln(w, "| start | case | loader | size | sessions | MTA | rep | sent | failed | delivered | complete | receive s | e2e s | e2e msg/s | p50 ms | p99 ms | max ms | MTA CPU s | PG CPU s | MTA procs | peak RSS MiB | peak PSS MiB | delivery clock | errors |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range rs {
		e := strings.ReplaceAll(strings.Join(r.Errors, "; "), "|", "/")
		if len(e) > 200 {
			e = e[:200] + "…"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %s | %d | %d | %d | %d | %v | %.2f | %.2f | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f | %d | %.0f | %.0f | %s | %s |\n",
			r.Start, r.Case, r.Loader, sizeName(r.Size), r.Sessions, r.MTA, r.Rep, r.Sent, r.Failed, r.Delivered, r.Complete,
			r.ReceiveSecs, r.E2ESecs, r.E2ERate, r.LatP50ms, r.LatP99ms, r.LatMaxms, r.MTACPUSecs, r.PGCPUSecs, r.MTAProcs,
			float64(r.PeakRSSKiB)/1024, float64(r.PeakPSSKiB)/1024, r.Clock, e)
	}
}
