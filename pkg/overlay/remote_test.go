package overlay

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

var self = Self{Host: "h1", PublicIP: netip.MustParseAddr("198.51.100.1")}

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, b} }

func ip(n byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, n}) }

func rec(host, network, subnet string, n byte) state.KeyedNetwork {
	return state.KeyedNetwork{
		Key: "/flannel/network/subnets/" + host + "/" + network,
		Network: registry.Network{Host: host, Network: network, Subnet: netip.MustParsePrefix(subnet),
			PublicIP: ip(n), VtepMAC: mac(n), VNI: 1},
	}
}

func vxlanLease(subnet string, n byte) state.Lease {
	p := netip.MustParsePrefix(subnet)
	return state.Lease{Subnet: p, Raw: flannel.NewVXLAN(ip(n), 1, mac(n)), PublicIP: ip(n), VNI: 1, VtepMAC: mac(n)}
}

func reservation(subnet, host string) state.Lease {
	raw := flannel.NewReservation(host, "net")
	var d flannel.ReservationData
	_ = json.Unmarshal(raw.BackendData, &d)
	return state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: raw, PublicIP: netip.IPv4Unspecified(), Reservation: &d}
}

func TestResolve(t *testing.T) {
	p := "198.18.2.0/24"
	l := func(x state.Lease) *state.Lease { return &x }
	for _, tc := range []struct {
		name     string
		records  []state.KeyedNetwork
		lease    *state.Lease
		want     *Subnet // nil: not routed
		conflict bool
	}{
		{name: "remote record", records: []state.KeyedNetwork{rec("h2", "app", p, 2)},
			want: &Subnet{PublicIP: ip(2), VtepMAC: mac(2), Source: FromRecord, Owner: "/flannel/network/subnets/h2/app", Host: "h2"}},
		{name: "own record", records: []state.KeyedNetwork{rec("h1", "app", p, 9)}},
		{name: "record with our PublicIP", records: []state.KeyedNetwork{rec("hx", "app", p, 1)}},
		{name: "remote vxlan lease", lease: l(vxlanLease(p, 3)),
			want: &Subnet{PublicIP: ip(3), VtepMAC: mac(3), Source: FromLease, Owner: "lease " + p}},
		{name: "our own vxlan lease", lease: l(vxlanLease(p, 1))},
		{name: "reservation only", lease: l(reservation(p, "h2"))},
		{name: "lease without MAC", lease: &state.Lease{Subnet: netip.MustParsePrefix(p), Raw: flannel.Lease{BackendType: "vxlan"}, PublicIP: ip(3)}},
		{name: "record wins over lease", records: []state.KeyedNetwork{rec("h2", "app", p, 2)}, lease: l(vxlanLease(p, 3)),
			want: &Subnet{PublicIP: ip(2), VtepMAC: mac(2), Source: FromRecord, Owner: "/flannel/network/subnets/h2/app", Host: "h2"}},
		{name: "agreeing records", records: []state.KeyedNetwork{rec("h2", "b", p, 2), rec("h2", "a", p, 2)},
			want: &Subnet{PublicIP: ip(2), VtepMAC: mac(2), Source: FromRecord, Owner: "/flannel/network/subnets/h2/a", Host: "h2"}},
		{name: "disagreeing records", records: []state.KeyedNetwork{rec("h2", "a", p, 2), rec("h3", "a", p, 3)}, conflict: true},
		{name: "reservation picks its host", records: []state.KeyedNetwork{rec("h2", "a", p, 2), rec("h3", "a", p, 3)},
			lease: l(reservation(p, "h3")),
			want:  &Subnet{PublicIP: ip(3), VtepMAC: mac(3), Source: FromRecord, Owner: "/flannel/network/subnets/h3/a", Host: "h3", Reserved: true}},
		{name: "reservation of a third host", records: []state.KeyedNetwork{rec("h2", "a", p, 2)},
			lease: l(reservation(p, "h4")), conflict: true},
		{name: "ours and remote", records: []state.KeyedNetwork{rec("h1", "a", p, 1), rec("h2", "a", p, 2)}, conflict: true},
		{name: "remote record on our flannel subnet", records: []state.KeyedNetwork{rec("h2", "a", p, 2)},
			lease: l(vxlanLease(p, 1)), conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, c := Resolve(self, netip.MustParsePrefix(p), tc.records, tc.lease)
			if (c != nil) != tc.conflict {
				t.Errorf("conflict = %v, want %v", c, tc.conflict)
			}
			if tc.want == nil {
				if ok {
					t.Errorf("routed via %+v, want not routed", got)
				}
				return
			}
			want := *tc.want
			want.Prefix = netip.MustParsePrefix(p)
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve = %+v, %v; want %+v", got, ok, want)
			}
		})
	}
}

func TestL2Of(t *testing.T) {
	s := func(p string, n byte, src Source) Subnet {
		return Subnet{Prefix: netip.MustParsePrefix(p), PublicIP: ip(n), VtepMAC: mac(n), Source: src}
	}
	subnets := map[netip.Prefix]Subnet{}
	for _, x := range []Subnet{
		s("198.18.2.0/24", 2, FromRecord),
		s("198.18.3.0/24", 2, FromLease),
		s("198.18.4.0/24", 3, FromRecord),
		s("198.18.4.0/23", 4, FromRecord), // same gateway, less specific: loses the neighbour
	} {
		subnets[x.Prefix] = x
	}
	odd := s("198.18.9.0/24", 2, FromLease)
	odd.PublicIP = ip(99) // a lease announcing mac(2) with another PublicIP
	subnets[odd.Prefix] = odd

	l2 := L2Of(subnets)
	want := L2{
		FDB: map[string]netip.Addr{mac(2).String(): ip(2), mac(3).String(): ip(3), mac(4).String(): ip(4)},
		Neigh: map[netip.Addr]string{
			netip.MustParseAddr("198.18.2.0"): mac(2).String(),
			netip.MustParseAddr("198.18.3.0"): mac(2).String(),
			netip.MustParseAddr("198.18.4.0"): mac(3).String(),
			netip.MustParseAddr("198.18.9.0"): mac(2).String(),
		},
		ByMAC: map[string][]netip.Addr{
			mac(2).String(): {netip.MustParseAddr("198.18.2.0"), netip.MustParseAddr("198.18.3.0"), netip.MustParseAddr("198.18.9.0")},
			mac(3).String(): {netip.MustParseAddr("198.18.4.0")},
		},
	}
	if !reflect.DeepEqual(l2, want) {
		t.Errorf("L2Of =\n%+v\nwant\n%+v", l2, want)
	}
}

// TestAllOrderIndependent replays the same records and leases in random
// orders: the desired state must not depend on arrival order.
func TestAllOrderIndependent(t *testing.T) {
	records := []state.KeyedNetwork{
		rec("h2", "a", "198.18.2.0/24", 2), rec("h2", "b", "198.18.3.0/24", 2),
		rec("h3", "a", "198.18.3.0/24", 3), // disagrees with h2/b: conflict
		rec("h3", "b", "198.18.5.0/24", 3), rec("h4", "a", "198.18.5.0/24", 4),
		rec("h1", "a", "198.18.6.0/24", 1), rec("h5", "a", "198.18.7.0/24", 5),
	}
	leases := []state.Lease{
		vxlanLease("198.18.8.0/24", 6), vxlanLease("198.18.7.0/24", 7), vxlanLease("198.18.1.0/24", 1),
		reservation("198.18.5.0/24", "h4"), reservation("198.18.2.0/24", "h2"),
	}
	wantSubnets, wantConflicts := All(self, records, leases)
	wantL2 := L2Of(wantSubnets)
	if len(wantSubnets) != 4 || len(wantConflicts) != 1 {
		t.Fatalf("All = %d subnets %v, conflicts %v; want 4 and 1", len(wantSubnets), wantSubnets, wantConflicts)
	}
	if got := wantSubnets[netip.MustParsePrefix("198.18.5.0/24")]; got.Owner != "/flannel/network/subnets/h4/a" {
		t.Errorf("198.18.5.0/24 owned by %q, want the reservation's host h4", got.Owner)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		rs, ls := append([]state.KeyedNetwork(nil), records...), append([]state.Lease(nil), leases...)
		r.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		r.Shuffle(len(ls), func(i, j int) { ls[i], ls[j] = ls[j], ls[i] })
		subnets, conflicts := All(self, rs, ls)
		if !reflect.DeepEqual(subnets, wantSubnets) || !reflect.DeepEqual(conflicts, wantConflicts) ||
			!reflect.DeepEqual(L2Of(subnets), wantL2) {
			t.Fatalf("order %v / %v changed the result", rs, ls)
		}
	}
}
