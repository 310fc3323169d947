package app

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// Beyond the limit the entry lists the unreachable, then the undecided,
// then reachable peers in full, names the other reachable ones by address
// and counts every one left out; under it, every peer is listed as it came.
func TestListPeers(t *testing.T) {
	yes, no := true, false
	var ps []PeerStatus
	for i := range 10 {
		p := PeerStatus{PublicIP: fmt.Sprintf("198.51.100.%d", i)}
		switch i % 5 {
		case 0:
			p.Reachable = &no
		case 1:
		default:
			p.Reachable = &yes
		}
		ps = append(ps, p)
	}
	all, omitted, names := listPeers(append([]PeerStatus(nil), ps...), 10)
	if len(all) != 10 || omitted != nil || names != nil || all[3].PublicIP != "198.51.100.3" {
		t.Fatalf("under the limit: %d listed, omitted %+v, names %v", len(all), omitted, names)
	}
	listed, omitted, names := listPeers(ps, 3)
	var got []string
	for _, p := range listed {
		got = append(got, p.PublicIP)
	}
	// .0 and .5 unreachable, .1 undecided, then .6 is left out among .6 .1 ...
	if fmt.Sprint(got) != "[198.51.100.0 198.51.100.5 198.51.100.1]" {
		t.Fatalf("listed %v, want the unreachable then the undecided first", got)
	}
	if omitted == nil || *omitted != (PeerCounts{Reachable: 6, Unknown: 1}) {
		t.Fatalf("omitted %+v, want 6 reachable and 1 undecided", omitted)
	}
	if len(names) != 6 || names[0] != "198.51.100.2" {
		t.Fatalf("reachable omitted named %v, want the 6 reachable from .2", names)
	}
	b, err := json.Marshal(HostStatus{Peers: listed, PeersOmitted: omitted, ReachableOmitted: names})
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeHostStatus(b)
	if err != nil || len(back.Peers) != 3 || back.PeersOmitted == nil || len(back.ReachableOmitted) != 6 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

// status shows a peer the entry lists with its decision, one it names only
// by address as reachable, and one it does not name as unknown.
func TestStatusReachOfOmittedPeers(t *testing.T) {
	a := testApp()
	for i, ip := range []string{"198.51.100.12", "198.51.100.13", "198.51.100.14"} {
		a.store.PutHost(registry.HostRecord{Host: fmt.Sprintf("node-%d", i+2), PublicIP: ip}, "test")
	}
	no := false
	entries := map[string]HostStatus{"node-1": {
		Host:             "node-1",
		Peers:            []PeerStatus{{Host: "node-2", PublicIP: "198.51.100.12", Reachable: &no}},
		PeersOmitted:     &PeerCounts{Reachable: 1, Unknown: 1},
		ReachableOmitted: []string{"198.51.100.13"},
	}}
	got := map[string]string{}
	for _, h := range a.statusHosts(netip.MustParseAddr("198.51.100.11"), entries) {
		got[h.Name] = h.Reach
	}
	want := map[string]string{"node-2": "unreachable", "node-3": "reachable", "node-4": "unknown"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reach = %v, want %v", got, want)
	}
}
