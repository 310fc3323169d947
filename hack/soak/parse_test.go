package main

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseKiB(t *testing.T) {
	if n, err := parseKiB(" 23456 kB"); err != nil || n != 23456 {
		t.Errorf("parseKiB = %d, %v", n, err)
	}
	if _, err := parseKiB("23456"); err == nil {
		t.Error("no unit accepted")
	}
}

func TestParseGoroutines(t *testing.T) {
	page := "# HELP flannel_registrar_go_goroutines Number of goroutines that currently exist.\n# TYPE flannel_registrar_go_goroutines gauge\nflannel_registrar_go_goroutines 87\nflannel_registrar_go_threads 9\n"
	if n, err := parseGoroutines(strings.NewReader(page)); err != nil || n != 87 {
		t.Errorf("parseGoroutines = %d, %v", n, err)
	}
	if _, err := parseGoroutines(strings.NewReader("go_threads 9\n")); err == nil {
		t.Error("a page without go_goroutines accepted")
	}
}

func TestPingsUp(t *testing.T) {
	r := newRecorder()
	t0 := time.Now().Add(-10 * time.Second)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p12, p21 := Pair{1, 2}, Pair{2, 1}
	for i, ok := range []bool{true, false, false, true, true, true} {
		r.add(Sample{Pair: p12, At: at(i * 100), Answered: ok})
		r.add(Sample{Pair: p21, At: at(i * 100), Answered: true})
	}
	back, err := r.pingsUp([]Pair{p12, p21}, t0, 3, time.Now())
	if err != nil || !back.Equal(at(300)) {
		t.Fatalf("pingsUp = %v, %v; want the run from sample 3 (%v)", back, err, at(300))
	}
	if _, err := r.pingsUp([]Pair{p12}, t0, 4, time.Now()); err == nil {
		t.Fatal("4 in a row reported, only 3 answered")
	}
	// An unanswered sample younger than Settle is skipped, not a loss.
	r.add(Sample{Pair: p12, At: time.Now()})
	if _, err := r.pingsUp([]Pair{p12}, t0, 3, time.Now()); err != nil {
		t.Fatalf("in-flight sample counted as lost: %v", err)
	}
}

func TestDiffRecords(t *testing.T) {
	w1 := wantNet{Host: "h1", Name: "a", Subnet: netip.MustParsePrefix("198.19.1.0/24")}
	w2 := wantNet{Host: "h2", Name: "b", Subnet: netip.MustParsePrefix("198.19.2.0/24")}
	wNew := wantNet{Host: "h2", Name: "new", Subnet: netip.MustParsePrefix("198.19.3.0/24")}
	facts := map[string]hostFacts{"h1": {PublicIP: "198.51.100.11", VtepMAC: "aa:aa:aa:aa:aa:01"}, "h2": {PublicIP: "198.51.100.12", VtepMAC: "aa:aa:aa:aa:aa:02"}}
	rec := func(h, n, sub, ip, mac string) string {
		return `{"Host":"` + h + `","Network":"` + n + `","Subnet":"` + sub + `","PublicIP":"` + ip + `","VtepMAC":"` + mac + `","VNI":1}`
	}
	res := func(h, n string) string {
		return `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"` + h + `","Network":"` + n + `"}}`
	}
	records := map[string]string{
		keys.Network("h1", "a"):   rec("h1", "a", "198.19.1.0/24", "198.51.100.11", "aa:aa:aa:aa:aa:01"),
		keys.Network("h2", "b"):   rec("h2", "b", "198.19.2.0/24", "198.51.100.12", "aa:aa:aa:aa:aa:99"), // stale MAC
		keys.Network("h2", "old"): rec("h2", "old", "198.19.9.0/24", "198.51.100.12", "aa:aa:aa:aa:aa:02"),
		keys.Host("h1"):           `{"PublicIP":"198.51.100.11"}`,
	}
	subnets := map[string]string{
		keys.Subnet(w1.Subnet):           res("h1", "a"),
		keys.Subnet(w2.Subnet):           res("h3", "b"), // another owner
		keys.Subnets() + "198.19.9.0-24": res("h2", "old"),
		keys.Subnets() + "198.18.5.0-24": `{"PublicIP":"198.51.100.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}}`,
	}
	missing, extra := diffRecords([]wantNet{w1, w2, wNew}, []wantNet{wNew}, records, subnets, facts)
	if len(missing) != 2 || !strings.Contains(missing[0], "VtepMAC") || !strings.Contains(missing[1], "held by") {
		t.Errorf("missing = %q, want h2/b's stale MAC and its foreign reservation", missing)
	}
	if len(extra) != 2 || !strings.Contains(extra[0], "h2/old") || !strings.Contains(extra[1], "198.19.9.0-24") {
		t.Errorf("extra = %q, want h2/old's record and reservation", extra)
	}
	// The same old network while it settles (just removed): not extra.
	_, extra = diffRecords([]wantNet{w1}, []wantNet{{Host: "h2", Name: "old"}}, records, subnets, facts)
	for _, e := range extra {
		if strings.Contains(e, "old") {
			t.Errorf("settling network reported extra: %s", e)
		}
	}
}

func TestNetworkGone(t *testing.T) {
	for msg, want := range map[string]bool{
		"host h2: docker network rm churn36: exit status 1: Error: No such network: churn36": true,
		"Error response from daemon: network churn7 not found":                               true,
		"Cannot connect to the Docker daemon at unix:///run/frlab-soak/h2/docker.sock":       false,
		"error while removing network: network churn3 id 1a2b has active endpoints":          false,
	} {
		if got := networkGone(errors.New(msg)); got != want {
			t.Errorf("networkGone(%q) = %v, want %v", msg, got, want)
		}
	}
}
