package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

const mac = "02:42:c6:33:64:0b"

// healthy is a host on which every check passes.
func healthy() Facts {
	return Facts{
		VXLANIface: "flannel.1", VXLANPresent: true, VXLANMTU: 1450, VXLANMAC: mac,
		IPForward: "1\n", RPFilterAll: "0", RPFilterDev: "2",
		ForwardPolicy: "DROP", LocalRegistered: 2, FilterJumped: true, NATJumped: true,
		DockerVersion: "20.10.24",
		BridgeMTUs:    map[string]int{"app1": 1450, "app2": 1400},
		SelfPublicIP:  netip.MustParseAddr("198.51.100.11"),
		Leases: []Lease{
			{Subnet: netip.MustParsePrefix("10.5.1.0/24"), PublicIP: netip.MustParseAddr("198.51.100.11"), VtepMAC: mac},
			{Subnet: netip.MustParsePrefix("10.5.2.0/24"), PublicIP: netip.MustParseAddr("198.51.100.12"), VtepMAC: "02:42:c6:33:64:0c"},
		},
		EtcdVersion: "3.6.16",
		HostName:    "node-1",
		Peers:       []Peer{{Name: "node-2", PublicIP: "198.51.100.12", Probed: true, Reachable: true}},
	}
}

func TestHealthyHostPasses(t *testing.T) {
	rs := Run(healthy())
	for _, r := range rs {
		if r.Level != OK {
			t.Errorf("%s: %s %s (%s)", r.Check, r.Level, r.Why, r.Fix)
		}
	}
	if Failed(rs) {
		t.Fatal("Failed on a healthy host")
	}
}

// Each case breaks one fact and expects one check to change.
func TestEachCheckDecides(t *testing.T) {
	cases := []struct {
		name  string
		check func(Facts) Result
		edit  func(*Facts)
		level Level
		why   string // substring of Why
	}{
		{"ip_forward off", IPForward, func(f *Facts) { f.IPForward = "0\n" }, Fail, "ip_forward=0"},
		{"ip_forward unreadable", IPForward, func(f *Facts) { f.IPForward, f.IPForwardErr = "", errors.New("no /proc") }, Warn, "cannot read"},
		{"rp_filter strict on device", RPFilter, func(f *Facts) { f.RPFilterDev = "1" }, Warn, "strict"},
		{"rp_filter strict on all", RPFilter, func(f *Facts) { f.RPFilterAll, f.RPFilterDev = "1", "0" }, Warn, "strict"},
		{"rp_filter loose beats strict", RPFilter, func(f *Facts) { f.RPFilterAll, f.RPFilterDev = "1", "2" }, OK, "is 2"},
		{"chains missing under DROP", Forwarding, func(f *Facts) { f.FilterJumped = false }, Fail, "FLANNEL-REGISTRAR-FWD"},
		{"nat chain missing", Forwarding, func(f *Facts) { f.NATJumped = false }, Warn, "FLANNEL-REGISTRAR-NAT"},
		{"chains missing under ACCEPT", Forwarding, func(f *Facts) { f.ForwardPolicy, f.FilterJumped = "ACCEPT", false }, Warn, "not jumped"},
		{"no local networks", Forwarding, func(f *Facts) { f.LocalRegistered, f.FilterJumped, f.NATJumped = 0, false, false }, OK, "no local network"},
		{"iptables unreadable", Forwarding, func(f *Facts) { f.IPTablesErr = errors.New("no iptables") }, Warn, "cannot read"},
		{"docker 28 blocks", DirectRouting, func(f *Facts) {
			f.DockerVersion, f.DirectRoutingMsg = "28.3.0", "start dockerd with --allow-direct-routing"
		}, Fail, "28.3.0"},
		{"docker unreachable", DirectRouting, func(f *Facts) { f.DockerErr = errors.New("no socket") }, Warn, "cannot ask"},
		{"bridge MTU too large", MTU, func(f *Facts) { f.BridgeMTUs["big"] = 1500 }, Warn, "big=1500"},
		{"no vxlan for MTU", MTU, func(f *Facts) { f.VXLANPresent = false }, Warn, "missing"},
		{"lease missing", FlannelLease, func(f *Facts) { f.Leases = f.Leases[1:] }, Fail, "no flannel lease"},
		{"lease with old MAC", FlannelLease, func(f *Facts) { f.Leases[0].VtepMAC = "02:00:00:00:00:99" }, Fail, "no longer exists"},
		{"lease with other IP", FlannelLease, func(f *Facts) { f.Leases[0].PublicIP = netip.MustParseAddr("203.0.113.7") }, Fail, "PublicIP 203.0.113.7"},
		{"device missing", FlannelLease, func(f *Facts) { f.VXLANPresent = false }, Fail, "missing"},
		{"lease unknown without etcd", FlannelLease, func(f *Facts) { f.EtcdErr = errors.New("down") }, Warn, "etcd unreachable"},
		{"peer down", Peers, func(f *Facts) {
			f.Peers = append(f.Peers, Peer{Name: "node-3", PublicIP: "198.51.100.13", Probed: true})
		}, Fail, "node-3 (198.51.100.13)"},
		{"peer undecided", Peers, func(f *Facts) { f.Peers[0].Probed = false }, Warn, "not decided"},
		{"no probing", Peers, func(f *Facts) { f.PeersErr = errors.New("operation not permitted") }, Warn, "not probed"},
		{"peers unknown without etcd", Peers, func(f *Facts) { f.EtcdErr = errors.New("down") }, Warn, "not known"},
		{"no peers", Peers, func(f *Facts) { f.Peers = nil }, OK, "no peers"},
		{"unlisted peers down", Peers, func(f *Facts) { f.UnlistedDown = 3 }, Fail, "3 of 4 peers unreachable through flannel.1: 3 not named"},
		{"unlisted peers undecided", Peers, func(f *Facts) { f.UnlistedUnknown = 2 }, Warn, "2 of 3 peers not decided yet"},
		{"etcd down", Etcd, func(f *Facts) { f.EtcdErr = errors.New("context deadline exceeded") }, Fail, "deadline"},
		{"duplicate host name", HostName, func(f *Facts) { f.OtherRegistrars = []string{"198.51.100.99"} }, Fail, "198.51.100.99"},
		{"leftovers", Leftovers, func(f *Facts) { f.Leftovers = map[string]int{"network-text": 2, "exists": 1} }, Warn, "exists=1 network-text=2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := healthy()
			c.edit(&f)
			r := c.check(f)
			if r.Level != c.level || !strings.Contains(r.Why, c.why) {
				t.Fatalf("got %s %q, want %s containing %q", r.Level, r.Why, c.level, c.why)
			}
			if r.Level != OK && r.Fix == "" {
				t.Fatalf("%s without a fix: %q", r.Level, r.Why)
			}
			if got := healthy(); c.check(got).Level != OK {
				t.Fatalf("healthy facts do not pass %s", r.Check)
			}
		})
	}
}

func TestPrintAndFailed(t *testing.T) {
	f := healthy()
	f.IPForward = "0"
	rs := Run(f)
	if !Failed(rs) {
		t.Fatal("ip_forward=0 did not fail")
	}
	var b bytes.Buffer
	if err := Print(&b, rs); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != len(rs) {
		t.Fatalf("%d lines for %d checks:\n%s", lines, len(rs), b.String())
	}
	if !strings.Contains(b.String(), "fail  ip_forward") {
		t.Fatalf("no failing ip_forward line:\n%s", b.String())
	}
}

// A line names at most maxNamed peers and counts the others.
func TestPeersNamesAtMostTen(t *testing.T) {
	f := healthy()
	for i := range 12 {
		f.Peers = append(f.Peers, Peer{PublicIP: fmt.Sprintf("198.51.100.%d", 20+i), Probed: true})
	}
	f.UnlistedDown = 5
	r := Peers(f)
	want := "17 of 18 peers unreachable through flannel.1: 198.51.100.20, "
	if r.Level != Fail || !strings.HasPrefix(r.Why, want) || !strings.HasSuffix(r.Why, "198.51.100.29 and 7 more") {
		t.Fatalf("got %s %q, want it to start %q and name 10 then count 7", r.Level, r.Why, want)
	}
}
