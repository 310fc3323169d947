package main

// This file: the medians of repeated runs, and the goals as ratios.

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// The rows' names the goals are computed from.
const (
	// whoFlanneld: flanneldRun names its row "flanneld <version>, " and this.
	whoFlanneld     = "flannel vxlan leases"
	whoLeases       = "registrar, the same flannel leases"
	whoLeasesFloor  = "kernel floor, leases' shape (ip -batch)"
	whoRecords      = "registrar, network records"
	whoRecordsFloor = "kernel floor, records' shape (ip -batch)"
	whoNewRecord    = "registrar, one new record with N installed: route + neighbour + FDB"
)

// summarise merges the runs of each row (same who and N) into one: the
// median time, RSS and CPU (each on its own: the median run of one need
// not be that of another), and the range of times. Rows keep the order of
// their first run.
func summarise(rows []row) []row {
	type key struct {
		who string
		n   int
	}
	var order []key
	runs := map[key][]row{}
	for _, r := range rows {
		k := key{r.who, r.n}
		if _, ok := runs[k]; !ok {
			order = append(order, k)
		}
		runs[k] = append(runs[k], r)
	}
	out := make([]row, 0, len(order))
	for _, k := range order {
		rs := runs[k]
		m := rs[0]
		times := field(rs, func(r row) time.Duration { return r.time })
		m.time, m.minTime, m.maxTime = median(times), times[0], times[len(times)-1]
		m.cpu = median(field(rs, func(r row) time.Duration { return r.cpu }))
		m.rss = median(field(rs, func(r row) uint64 { return r.rss }))
		out = append(out, m)
	}
	return out
}

// field returns f of every row, sorted.
func field[T cmp.Ordered](rs []row, f func(row) T) []T {
	out := make([]T, 0, len(rs))
	for _, r := range rs {
		out = append(out, f(r))
	}
	slices.Sort(out)
	return out
}

// median of sorted values; of an even count, the lower middle one (a value
// that was measured, not an average of two).
func median[T any](sorted []T) T {
	return sorted[(len(sorted)-1)/2]
}

// printGoals prints, per N, the goals as ratios of the medians:
// records against flanneld (goal 1: under 1/10), leases against their
// floor (goal 2: within 1.5x), peak RSS against flanneld's (goal 3: at or
// below), and the new record's time.
func printGoals(w io.Writer, rows []row) {
	find := func(who string, n int) (row, bool) {
		i := slices.IndexFunc(rows, func(r row) bool {
			if who == whoFlanneld {
				return r.n == n && strings.HasPrefix(r.who, "flanneld") && strings.HasSuffix(r.who, ", "+whoFlanneld)
			}
			return r.n == n && r.who == who
		})
		if i < 0 {
			return row{}, false
		}
		return rows[i], true
	}
	var ns []int
	for _, r := range rows {
		if !slices.Contains(ns, r.n) {
			ns = append(ns, r.n)
		}
	}
	for _, n := range ns {
		_, _ = fmt.Fprintf(w, "N=%d:", n)
		fl, okF := find(whoFlanneld, n)
		if rec, ok := find(whoRecords, n); ok && okF && fl.time > 0 {
			_, _ = fmt.Fprintf(w, "  records/flanneld %.3f (goal < 0.100)", rec.time.Seconds()/fl.time.Seconds())
		}
		if l, ok := find(whoLeases, n); ok {
			if f, ok := find(whoLeasesFloor, n); ok && f.time > 0 {
				_, _ = fmt.Fprintf(w, "  leases/floor %.2fx (goal <= 1.50x)", l.time.Seconds()/f.time.Seconds())
			}
			if okF && fl.rss > 0 {
				_, _ = fmt.Fprintf(w, "  leases RSS/flanneld %.2f", float64(l.rss)/float64(fl.rss))
			}
		}
		if rec, ok := find(whoRecords, n); ok && okF && fl.rss > 0 {
			_, _ = fmt.Fprintf(w, "  records RSS/flanneld %.2f (goal <= 1.00)", float64(rec.rss)/float64(fl.rss))
		}
		_, _ = fmt.Fprintln(w)
	}
}
