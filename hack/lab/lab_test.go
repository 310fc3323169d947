package lab

import (
	"slices"
	"testing"
)

func TestParsePeers(t *testing.T) {
	out := `Active Internet connections (w/o servers)
Proto Recv-Q Send-Q Local Address           Foreign Address         State
tcp        0      0 198.19.1.2:49348        198.19.3.2:7000         TIME_WAIT
tcp        1      0 ::ffff:198.19.2.2:7000  ::ffff:198.19.1.2:42856 CLOSE_WAIT
tcp        0      0 198.19.2.2:7000         198.18.62.0:1234        ESTABLISHED
tcp        0      0 198.19.2.2:17000        198.19.9.9:1234         ESTABLISHED
`
	got := parsePeers(out, 7000)
	want := []string{"198.19.1.2", "198.18.62.0"}
	if !slices.Equal(got, want) {
		t.Fatalf("parsePeers = %v, want %v", got, want)
	}
}

func TestIsLabNamespace(t *testing.T) {
	cases := []struct {
		prefix, name string
		want         bool
	}{
		{"frlab-", "frlab-underlay", true},
		{"frlab-", "frlab-h1", true},
		{"frlab-", "frlab-gw", true},
		{"frlab-", "frlab-gw1", false},
		{"frlab-", "frlab-e2e-gw", false},
		{"frlab-", "frlab-h12", true},
		{"frlab-", "frlab-h", false},
		{"frlab-", "frlab-hx", false},
		{"frlab-", "frlab-e2e-h1", false},
		{"frlab-", "frlab-e2e-underlay", false},
		{"frlab-e2e-", "frlab-e2e-h1", true},
		{"frlab-", "other-h1", false},
		{"frlab-", "frlab-etcd1", true},
		{"frlab-", "frlab-etcd", false},
		{"frlab-", "frlab-etcdx", false},
		{"frlab-", "frlab-e2e-etcd1", false},
		{"frlab-e2e-", "frlab-e2e-etcd3", true},
	}
	for _, c := range cases {
		if got := isLabNamespace(c.prefix, c.name); got != c.want {
			t.Errorf("isLabNamespace(%q, %q) = %v, want %v", c.prefix, c.name, got, c.want)
		}
	}
}

func TestStatFields(t *testing.T) {
	stat := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10"
	f := statFields(stat)
	if f[0] != "S" || f[1] != "1" || f[19] != "98765" {
		t.Fatalf("statFields = %v", f)
	}
}

func TestUnderDir(t *testing.T) {
	if !underDir("/run/frlab/h1", "/run/frlab") || underDir("/run/frlab-e2e/h1", "/run/frlab") || !underDir("/run/frlab", "/run/frlab") {
		t.Fatal("underDir wrong")
	}
}

func TestRoutedTopologyAddresses(t *testing.T) {
	o := Options{Hosts: 3, StateDir: "/run/frlab-x", Topology: TopologyRouted}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	l := newLab(o)
	type want struct {
		ip, subnet, gw, bridge string
		far                    bool
	}
	wants := []want{
		{"198.51.100.11", NearCIDR, GatewayNearIP, "br0", false},
		{"198.51.100.12", NearCIDR, GatewayNearIP, "br0", false},
		{"198.51.100.141", FarCIDR, GatewayFarIP, "br1", true},
	}
	for i, w := range wants {
		h := l.Hosts[i]
		got := want{h.IP, h.SubnetCIDR(), h.GatewayIP(), h.bridge(), h.Far()}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", h.Name, got, w)
		}
	}
	if l.underlayBits() != 25 || l.GatewayNetns() != "frlab-x-gw" {
		t.Errorf("underlay bits %d, gateway netns %s", l.underlayBits(), l.GatewayNetns())
	}
	flat := newLab(Options{Hosts: 3, StateDir: "/run/frlab-x"})
	if h := flat.Hosts[2]; h.IP != "198.51.100.13" || h.Far() || h.bridge() != "br0" || flat.underlayBits() != 24 {
		t.Errorf("flat topology: h3 %s far %v bridge %s bits %d", h.IP, h.Far(), h.bridge(), flat.underlayBits())
	}
	for _, bad := range []Options{{Hosts: 1, Topology: TopologyRouted}, {Hosts: 3, Topology: "mesh"}} {
		bad.StateDir = "/run/frlab-x"
		if err := bad.setDefaults(); err == nil {
			t.Errorf("setDefaults(%+v) accepted", bad)
		}
	}
}
