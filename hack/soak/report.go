package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Pair is a source and a target host (1-based) of the all-pairs pings.
type Pair struct{ From, To int }

// Sample is one echo request of the all-pairs pings.
type Sample struct {
	Pair     Pair
	At       time.Time // sent
	Answered bool
}

// Interval is a span of time; a zero To means still open.
type Interval struct{ From, To time.Time }

// Window is one injected fault: from its injection until the next one.
type Window struct {
	Fault Fault
	Start time.Time     // injection began
	End   time.Time     // injection done (the fault undone: etcd resumed, daemon started, ...)
	Ready time.Duration // from End to full connectivity; <0: never within the wait
	Err   error         // the injection failed
}

// NoFault labels the pings before the first fault (quiet start, churn only).
const NoFault Kind = "(no fault)"

// Row is one line of the soak's table.
type Row struct {
	Kind        Kind
	Count       int
	Sent        int
	Lost        int
	LostDown    int // lost while the source or target container was not running (±DownSlack)
	LostAfter   int // lost after the fault ended (the injection undone): recovery's share
	WorstReady  time.Duration
	TotalReady  time.Duration
	NotReady    int // windows that did not reach full connectivity within the wait
	InjectFails int
}

// DownSlack widens a container's down interval: after a container starts
// again, its neighbours (ARP) and the prober's new socket take a moment.
const DownSlack = 2 * time.Second

// Settle is how old an unanswered sample must be to count as lost.
const Settle = 2 * time.Second

// Attribute assigns every settled sample to the window it was sent in
// (windows sorted by Start; a sample belongs to the last window that
// started before it, samples before the first to NoFault) and sums, per
// fault kind, the windows and the pings. down holds, per host, the
// intervals its container was not running. Samples sent after now-Settle
// are not counted (their answer may still come).
func Attribute(samples []Sample, windows []Window, down map[int][]Interval, now time.Time) []Row {
	rows := map[Kind]*Row{NoFault: {Kind: NoFault}}
	for _, k := range AllKinds {
		rows[k] = &Row{Kind: k}
	}
	for _, w := range windows {
		r := rows[w.Fault.Kind]
		r.Count++
		if w.Err != nil {
			r.InjectFails++
			continue
		}
		if w.Ready < 0 {
			r.NotReady++
			continue
		}
		r.WorstReady = max(r.WorstReady, w.Ready)
		r.TotalReady += w.Ready
	}
	for _, s := range samples {
		if !s.At.Before(now.Add(-Settle)) {
			continue
		}
		k := NoFault
		var w *Window
		i := sort.Search(len(windows), func(i int) bool { return windows[i].Start.After(s.At) })
		if i > 0 {
			w = &windows[i-1]
			k = w.Fault.Kind
		}
		r := rows[k]
		r.Sent++
		if s.Answered {
			continue
		}
		r.Lost++
		if w != nil && !s.At.Before(w.End) {
			r.LostAfter++
		}
		if inAny(down[s.Pair.From], s.At) || inAny(down[s.Pair.To], s.At) {
			r.LostDown++
		}
	}
	out := []Row{*rows[NoFault]}
	for _, k := range AllKinds {
		out = append(out, *rows[k])
	}
	return out
}

func inAny(ivs []Interval, t time.Time) bool {
	for _, iv := range ivs {
		if t.Before(iv.From) {
			continue
		}
		if iv.To.IsZero() || t.Before(iv.To.Add(DownSlack)) {
			return true
		}
	}
	return false
}

// RenderTable writes the per-kind table.
func RenderTable(rows []Row) string {
	w := &strings.Builder{}
	fmt.Fprintf(w, "| %-26s | %5s | %7s | %6s | %11s | %10s | %11s | %10s | %9s |\n",
		"fault", "count", "pings", "lost", "lost (ctr↓)", "lost after", "worst ready", "mean ready", "not ready")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", dashes(28), dashes(7), dashes(9), dashes(8), dashes(13), dashes(12), dashes(13), dashes(12), dashes(11))
	for _, r := range rows {
		worst, mean := "-", "-"
		if ready := r.Count - r.NotReady - r.InjectFails; ready > 0 {
			worst = msText(r.WorstReady)
			mean = msText(r.TotalReady / time.Duration(ready))
		}
		count := fmt.Sprint(r.Count)
		if r.Kind == NoFault {
			count = "-"
		}
		notReady := fmt.Sprint(r.NotReady)
		if r.InjectFails > 0 {
			notReady += fmt.Sprintf(" +%d failed", r.InjectFails)
		}
		fmt.Fprintf(w, "| %-26s | %5s | %7d | %6d | %11d | %10d | %11s | %10s | %9s |\n",
			r.Kind, count, r.Sent, r.Lost, r.LostDown, r.LostAfter, worst, mean, notReady)
	}
	return w.String()
}

func msText(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func dashes(n int) string { return strings.Repeat("-", n) }

// Usage is one registrar's resources at one point of the soak.
type Usage struct {
	Host       string
	Pid        int
	RSSKiB     int64
	Goroutines int
	Err        error
}

// Growth bounds between the end of the first half and the end of the
// second: the same faults and churn ran in each, so a leak shows as growth.
const (
	MaxRSSGrowth       = 0.5 // +50 %
	MaxGoroutineGrowth = 50
)

// CheckGrowth compares each host's registrar at mid and end. A registrar
// restarted in between (other pid) is not judged.
func CheckGrowth(mid, end []Usage) []string {
	var bad []string
	for _, e := range end {
		i := slices.IndexFunc(mid, func(m Usage) bool { return m.Host == e.Host })
		if i < 0 {
			continue
		}
		m := mid[i]
		if m.Err != nil || e.Err != nil || m.Pid != e.Pid {
			continue
		}
		if float64(e.RSSKiB) > float64(m.RSSKiB)*(1+MaxRSSGrowth) {
			bad = append(bad, fmt.Sprintf("%s: RSS grew %d -> %d KiB in the second half (bound +%.0f %%)", e.Host, m.RSSKiB, e.RSSKiB, MaxRSSGrowth*100))
		}
		if e.Goroutines > m.Goroutines+MaxGoroutineGrowth {
			bad = append(bad, fmt.Sprintf("%s: goroutines grew %d -> %d in the second half (bound +%d)", e.Host, m.Goroutines, e.Goroutines, MaxGoroutineGrowth))
		}
	}
	return bad
}

// RenderUsage writes the registrars' resources at the three points.
func RenderUsage(start, mid, end []Usage) string {
	w := &strings.Builder{}
	fmt.Fprintf(w, "| %-4s | %-28s | %-28s | %-28s |\n", "host", "start (pid RSS goroutines)", "after first half", "end")
	fmt.Fprintf(w, "|%s|%s|%s|%s|\n", dashes(6), dashes(30), dashes(30), dashes(30))
	for i, s := range start {
		cell := func(us []Usage) string {
			if i >= len(us) {
				return "-"
			}
			u := us[i]
			if u.Err != nil {
				return "error: " + u.Err.Error()
			}
			return fmt.Sprintf("%d %d KiB %d", u.Pid, u.RSSKiB, u.Goroutines)
		}
		fmt.Fprintf(w, "| %-4s | %-28s | %-28s | %-28s |\n", s.Host, cell(start), cell(mid), cell(end))
	}
	return w.String()
}
