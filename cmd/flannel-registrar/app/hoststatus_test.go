package app

import (
	"encoding/json"
	"fmt"
	"testing"
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
