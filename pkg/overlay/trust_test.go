package overlay

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

const cfgPrefix = "/flannel/network/subnets/"

// cluster is a snapshot like the lab's, seen from h1 (198.51.100.1, MAC
// :01): h2 and h3 run flanneld and registrars, h4's flanneld runs with
// --public-ip behind NAT (203.0.113.4) while its registrar publishes
// flannel.1's local address; etcd is at 198.51.100.254.
func cluster(t *testing.T) (*state.Store, Self) {
	t.Helper()
	s := state.New()
	s.SetUnderlay(state.Underlay{Underlay: policy.Underlay{
		Addrs:  []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")},
		Routes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Etcd:   []netip.Addr{netip.MustParseAddr("198.51.100.254")},
	}}, "test")
	s.SetFlannelNetwork(netip.MustParsePrefix("198.18.0.0/16"), "test")
	s.PutLease(vxlanLease("198.18.1.0/24", 1), "test") // this host's flannel subnet
	for _, n := range []byte{2, 3} {
		s.PutLease(vxlanLease("198.18."+itoa(n)+".0/24", n), "test")
		putHost(s, "h"+itoa(n), ip(n), mac(n))
	}
	putRecord(s, rec("h2", "web", "198.19.2.0/24", 2))
	s.PutLease(reservation("198.19.2.0/24", "h2"), "test")
	putRecord(s, rec("h3", "app", "198.19.3.0/24", 3))
	s.PutLease(reservation("198.19.3.0/24", "h3"), "test")

	nat := netip.MustParseAddr("203.0.113.4")
	l := vxlanLease("198.18.4.0/24", 4)
	l.PublicIP, l.Raw.PublicIP = nat, nat.String()
	s.PutLease(l, "test")
	putHost(s, "h4", ip(4), mac(4))
	putRecord(s, rec("h4", "db", "198.19.4.0/24", 4))
	putHost(s, "h5", ip(5), mac(5)) // a registrar host without a flanneld lease in view

	p := policy.Policy{Allowed: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}}
	self := Self{Host: "h1", PublicIP: ip(1), VtepMAC: mac(1)}
	self.Trust = &Trust{Policy: p, Facts: s.Facts(), Claims: s}
	return s, self
}

func itoa(n byte) string { return string('0' + rune(n)) }

func putHost(s *state.Store, host string, pub netip.Addr, m net.HardwareAddr) {
	s.PutHost(registry.HostRecord{Host: host, PublicIP: pub.String(), VtepMAC: m.String(), VNI: 1}, "test")
}

func putRecord(s *state.Store, r state.KeyedNetwork) { s.PutNetwork(r.Key, r.Network, "test") }

func evil(network, subnet string, pub netip.Addr, m net.HardwareAddr) state.KeyedNetwork {
	r := rec("evil", network, subnet, 66)
	r.PublicIP, r.VtepMAC = pub, m
	return r
}

// The hostile records of the lab's attack (issue 11), one at a time and all
// at once: none is routed, each is refused by the rule that names it, and
// the legitimate claims stay routed with their own VTEPs.
func TestHostileRecordsRefused(t *testing.T) {
	bad := ip(66)
	hostile := []struct {
		r      state.KeyedNetwork
		rule   string
		detail string
	}{
		{evil("etcd", "198.51.100.254/32", bad, mac(66)), policy.RuleNotAllowed, ""},
		{evil("half", "128.0.0.0/1", bad, mac(66)), policy.RuleReserved, ""},
		{evil("quarter", "64.0.0.0/2", bad, mac(66)), policy.RuleReserved, ""},
		{evil("peer", "198.51.100.2/32", bad, mac(66)), policy.RuleNotAllowed, ""},
		{evil("slice", "198.19.2.0/25", bad, mac(66)), policy.RuleOverlap, "record " + cfgPrefix + "h2/web"},
		{evil("flannelslice", "198.18.3.0/26", bad, mac(66)), policy.RuleOverlap, "flannel lease 198.18.3.0/24"},
		{evil("ownslice", "198.18.1.128/25", bad, mac(66)), policy.RuleOverlap, "this host's flannel subnet"},
		{evil("metadata", "169.254.169.254/32", bad, mac(66)), policy.RuleReserved, ""},
		{evil("multicast", "224.0.0.0/4", bad, mac(66)), policy.RuleReserved, ""},
		{evil("stolenmac", "198.19.9.0/24", bad, mac(2)), policy.RuleVTEP, "belongs to flannel lease 198.18.2.0/24"},
		{evil("ownmac", "198.19.10.0/24", bad, mac(1)), policy.RuleVTEP, "this host's own VTEP MAC"},
		{evil("loopback", "198.19.11.0/24", netip.MustParseAddr("127.0.0.1"), mac(67)), policy.RuleVTEP, "not a unicast"},
		{evil("self", "198.19.12.0/24", netip.MustParseAddr("0.0.0.1"), mac(68)), policy.RuleVTEP, "reserved range"},
		{evil("hostmac", "198.19.13.0/24", bad, mac(5)), policy.RuleVTEP, "belongs to host h5 at 198.51.100.5"},
	}
	check := func(t *testing.T, s *state.Store, self Self, want map[netip.Prefix]string) {
		t.Helper()
		subnets, conflicts := All(self, s.Networks(), s.Leases())
		for p, rule := range want {
			if _, ok := subnets[p]; ok {
				t.Errorf("%s routed, want refused (%s)", p, rule)
			}
		}
		got := map[netip.Prefix]Conflict{}
		for _, c := range conflicts {
			got[c.Prefix] = c
		}
		for _, h := range hostile {
			c, ok := got[h.r.Subnet]
			if _, wanted := want[h.r.Subnet]; !wanted {
				continue
			}
			if !ok || c.Rule != h.rule || !strings.Contains(c.Reason, h.detail) {
				t.Errorf("%s: conflict %+v, want rule %s with %q", h.r.Subnet, c, h.rule, h.detail)
			}
		}
		for p, pub := range map[string]string{"198.19.2.0/24": "198.51.100.2", "198.19.3.0/24": "198.51.100.3",
			"198.18.2.0/24": "198.51.100.2", "198.19.4.0/24": "203.0.113.4"} {
			sub, ok := subnets[netip.MustParsePrefix(p)]
			if !ok || sub.PublicIP.String() != pub {
				t.Errorf("%s: %+v %v, want routed via %s", p, sub, ok, pub)
			}
		}
		if fdb := L2Of(subnets).FDB; fdb[mac(2).String()] != ip(2) || fdb[mac(4).String()].String() != "203.0.113.4" {
			t.Errorf("FDB %v: a hostile record moved a VTEP", fdb)
		}
	}
	for _, h := range hostile {
		t.Run(h.r.Network.Network, func(t *testing.T) {
			s, self := cluster(t)
			putRecord(s, h.r)
			check(t, s, self, map[netip.Prefix]string{h.r.Subnet: h.rule})
		})
	}
	t.Run("all at once", func(t *testing.T) {
		s, self := cluster(t)
		want := map[netip.Prefix]string{}
		for _, h := range hostile {
			putRecord(s, h.r)
			want[h.r.Subnet] = h.rule
		}
		check(t, s, self, want)
	})
}

// A partial overlap is a conflict like an exact one: a live flanneld lease
// beats a record, a reserved record beats an unreserved one, equals lose
// both; a claim the policy refuses knocks out nothing.
func TestOverlapStrength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		put     func(*state.Store)
		routed  []string
		refused []string
	}{
		{"two unreserved records overlap: both refused", func(s *state.Store) {
			putRecord(s, rec("h5", "a", "198.19.50.0/24", 5))
			putRecord(s, rec("h6", "b", "198.19.50.128/25", 6))
		}, nil, []string{"198.19.50.0/24", "198.19.50.128/25"}},
		{"the reserved one wins", func(s *state.Store) {
			putRecord(s, rec("h5", "a", "198.19.50.0/24", 5))
			s.PutLease(reservation("198.19.50.0/24", "h5"), "test")
			putRecord(s, rec("h6", "b", "198.19.50.128/25", 6))
		}, []string{"198.19.50.0/24"}, []string{"198.19.50.128/25"}},
		{"a flannel lease beats a reserved record", func(s *state.Store) {
			s.PutLease(vxlanLease("198.18.60.0/24", 7), "test")
			putRecord(s, rec("h8", "a", "198.18.60.0/23", 8))
			s.PutLease(reservation("198.18.60.0/23", "h8"), "test")
		}, []string{"198.18.60.0/24"}, []string{"198.18.60.0/23"}},
		{"a refused wide claim knocks out nothing", func(s *state.Store) {
			putRecord(s, rec("h5", "wide", "198.0.0.0/8", 5))
		}, []string{"198.19.2.0/24", "198.18.2.0/24"}, []string{"198.0.0.0/8"}},
		{"this host's network is protected", func(s *state.Store) {
			putRecord(s, rec("h1", "mine", "198.19.70.0/24", 1))
			putRecord(s, rec("h5", "x", "198.19.70.0/25", 5))
			s.PutLease(reservation("198.19.70.0/25", "h5"), "test")
		}, nil, []string{"198.19.70.0/25"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, self := cluster(t)
			tc.put(s)
			subnets, conflicts := All(self, s.Networks(), s.Leases())
			for _, p := range tc.routed {
				if _, ok := subnets[netip.MustParsePrefix(p)]; !ok {
					t.Errorf("%s not routed; conflicts %v", p, conflicts)
				}
			}
			for _, p := range tc.refused {
				if sub, ok := subnets[netip.MustParsePrefix(p)]; ok {
					t.Errorf("%s routed via %+v, want refused", p, sub)
				}
			}
		})
	}
}

// Without the NAT host's host record vouching for its MAC, a record that
// disagrees with flanneld's lease on the VTEP's address is not trusted.
func TestBindingNeedsHostRecord(t *testing.T) {
	s, self := cluster(t)
	s.DeleteHost("h4", "test")
	subnets, conflicts := All(self, s.Networks(), s.Leases())
	if _, ok := subnets[netip.MustParsePrefix("198.19.4.0/24")]; ok {
		t.Fatalf("routed without the host record: %v", conflicts)
	}
}

func TestPublicIPOf(t *testing.T) {
	s := state.New()
	link := state.Link{Present: true, MAC: mac(4), Local: ip(4)}
	if got := PublicIPOf(netip.Addr{}, link, s); got != ip(4) {
		t.Fatalf("no lease: %s, want the device's local address", got)
	}
	l := vxlanLease("198.18.4.0/24", 4)
	l.PublicIP = netip.MustParseAddr("203.0.113.4")
	s.PutLease(l, "test")
	if got := PublicIPOf(netip.Addr{}, link, s); got.String() != "203.0.113.4" {
		t.Fatalf("own lease behind NAT: %s, want the lease's PublicIP", got)
	}
	if got := PublicIPOf(ip(9), link, s); got != ip(9) {
		t.Fatalf("FLANNELD_PUBLIC_IP: %s", got)
	}
}
