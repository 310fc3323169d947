package main

import (
	"strings"
	"testing"
	"time"
)

func TestSummariseTakesMedianAndRange(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	rows := []row{
		{who: "flanneld v0.27.4, flannel vxlan leases", n: 10, time: ms(9000), rss: 100, cpu: ms(5)},
		{who: whoRecords, n: 10, time: ms(900), rss: 50, cpu: ms(3)},
		{who: "flanneld v0.27.4, flannel vxlan leases", n: 10, time: ms(11000), rss: 110, cpu: ms(7)},
		{who: whoRecords, n: 10, time: ms(2000), rss: 40, cpu: ms(1)},
		{who: "flanneld v0.27.4, flannel vxlan leases", n: 10, time: ms(10000), rss: 90, cpu: ms(6)},
		{who: whoRecords, n: 10, time: ms(1000), rss: 60, cpu: ms(2)},
	}
	got := summarise(rows)
	if len(got) != 2 || !strings.HasPrefix(got[0].who, "flanneld") || got[1].who != whoRecords {
		t.Fatalf("rows %+v: want flanneld then records, one each", got)
	}
	if r := got[1]; r.time != ms(1000) || r.minTime != ms(900) || r.maxTime != ms(2000) || r.rss != 50 || r.cpu != ms(2) {
		t.Errorf("records summary %+v: want median 1s in 0.9-2s, RSS 50, CPU 2ms", r)
	}
	var b strings.Builder
	printGoals(&b, got)
	if want := "records/flanneld 0.100"; !strings.Contains(b.String(), want) {
		t.Errorf("goals %q: want %q", b.String(), want)
	}
	if want := "records RSS/flanneld 0.50"; !strings.Contains(b.String(), want) {
		t.Errorf("goals %q: want %q", b.String(), want)
	}
	// A flanneld built without a version is named "flanneld, ..." (flanneldRun).
	got[0].who = "flanneld, " + whoFlanneld
	b.Reset()
	printGoals(&b, got)
	if want := "records/flanneld 0.100"; !strings.Contains(b.String(), want) {
		t.Errorf("goals with an unversioned flanneld %q: want %q", b.String(), want)
	}
}

func TestMedianOfEvenCountIsMeasured(t *testing.T) {
	if got := median([]int{1, 2, 8, 9}); got != 2 {
		t.Errorf("median = %d, want the lower middle value 2", got)
	}
}
