package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAttribute(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	p12, p21 := Pair{1, 2}, Pair{2, 1}
	windows := []Window{
		{Fault: Fault{Kind: EtcdPause}, Start: at(10), End: at(30), Ready: 500 * time.Millisecond},
		{Fault: Fault{Kind: DockerdRestart, Host: 2}, Start: at(40), End: at(50), Ready: 3 * time.Second},
		{Fault: Fault{Kind: EtcdPause}, Start: at(60), End: at(80), Ready: 1500 * time.Millisecond},
		{Fault: Fault{Kind: FirewallJump, Host: 1}, Start: at(90), End: at(90), Ready: -1},
		{Fault: Fault{Kind: GarbageKey}, Start: at(95), End: at(97), Err: errors.New("etcd down")},
	}
	down := map[int][]Interval{2: {{From: at(41), To: at(48)}}}
	samples := []Sample{
		{Pair: p12, At: at(1), Answered: true},  // no fault
		{Pair: p12, At: at(2)},                  // no fault, lost
		{Pair: p12, At: at(15), Answered: true}, // etcd pause
		{Pair: p21, At: at(42)},                 // dockerd, h2 down
		{Pair: p12, At: at(49.5)},               // dockerd, within the slack after h2 was up
		{Pair: p12, At: at(55)},                 // dockerd, h2 up for a while: not excused
		{Pair: p21, At: at(61), Answered: true}, // second etcd pause
		{Pair: p12, At: at(91)},                 // firewall
		{Pair: p12, At: at(99.5)},               // not settled at now=100: not counted
		{Pair: p12, At: at(10), Answered: true}, // exactly at a window's start: that window
	}
	rows := Attribute(samples, windows, down, at(100))
	byKind := map[Kind]Row{}
	for _, r := range rows {
		byKind[r.Kind] = r
	}
	check := func(k Kind, want Row) {
		t.Helper()
		got := byKind[k]
		want.Kind = k
		if got != want {
			t.Errorf("%s: %+v, want %+v", k, got, want)
		}
	}
	check(NoFault, Row{Sent: 2, Lost: 1})
	check(EtcdPause, Row{Count: 2, Sent: 3, WorstReady: 1500 * time.Millisecond, TotalReady: 2 * time.Second})
	check(DockerdRestart, Row{Count: 1, Sent: 3, Lost: 3, LostDown: 2, LostAfter: 1, WorstReady: 3 * time.Second, TotalReady: 3 * time.Second})
	check(FirewallJump, Row{Count: 1, Sent: 1, Lost: 1, LostAfter: 1, NotReady: 1})
	check(GarbageKey, Row{Count: 1, InjectFails: 1})
	if len(rows) != len(AllKinds)+1 || rows[0].Kind != NoFault {
		t.Errorf("rows %v: want (no fault) then every kind", rows)
	}

	out := RenderTable(rows)
	for _, want := range []string{"| etcd paused 20s", "1500 ms", "1000 ms", "+1 failed", "| (no fault)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckGrowth(t *testing.T) {
	mid := []Usage{
		{Host: "h1", Pid: 10, RSSKiB: 40000, Goroutines: 100},
		{Host: "h2", Pid: 20, RSSKiB: 40000, Goroutines: 100},
		{Host: "h3", Pid: 30, RSSKiB: 40000, Goroutines: 100},
	}
	end := []Usage{
		{Host: "h1", Pid: 10, RSSKiB: 60000, Goroutines: 150}, // at the bounds: fine
		{Host: "h2", Pid: 20, RSSKiB: 60001, Goroutines: 151}, // past both
		{Host: "h3", Pid: 31, RSSKiB: 90000, Goroutines: 500}, // restarted: not judged
	}
	bad := CheckGrowth(mid, end)
	if len(bad) != 2 || !strings.Contains(bad[0], "h2: RSS") || !strings.Contains(bad[1], "h2: goroutines") {
		t.Fatalf("CheckGrowth = %q, want h2's RSS and goroutines", bad)
	}
}
