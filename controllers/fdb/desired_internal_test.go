package fdb

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// desired, built VTEP by VTEP from the store's indexes, is the link-layer
// state overlay.L2Of derives from the whole snapshot (overlay.All): with
// records sharing a VTEP, a record beside a lease of its VTEP, two records
// claiming one subnet, overlapping claims, this host's own lease and a
// reservation; and it marks the entries the records want as ours.
func TestDesiredAgreesWithWholeSnapshot(t *testing.T) {
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, b} }
	ip := func(b byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, b}) }
	local := ip(1)
	store := state.New()
	store.SetLink(state.Link{Name: "flannel.1", Present: true, Up: true, Index: 7, MAC: mac(1), Local: local, VNI: 1}, "test")
	rec := func(n byte, network, subnet string) {
		store.PutNetwork(fmt.Sprintf("/flannel/network/subnets/h%d/%s", n, network), registry.Network{Host: fmt.Sprintf("h%d", n),
			Network: network, Subnet: netip.MustParsePrefix(subnet), PublicIP: ip(n), VtepMAC: mac(n), VNI: 1}, "test")
	}
	lease := func(n byte, subnet string) {
		store.PutLease(state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: flannel.NewVXLAN(ip(n), 1, mac(n)),
			PublicIP: ip(n), VNI: 1, VtepMAC: mac(n)}, "test")
	}
	rec(2, "a", "198.18.2.0/24")
	rec(2, "b", "198.18.3.0/24")
	rec(2, "c", "198.18.4.0/25")
	rec(3, "a", "198.18.3.0/24") // claims h2/b's subnet: a conflict
	rec(3, "b", "198.18.5.0/24")
	rec(4, "a", "198.18.6.0/24")
	lease(4, "198.18.7.0/24")    // a lease of a record VTEP
	lease(5, "198.18.8.0/24")    // a lease alone
	lease(6, "198.18.8.0/25")    // overlapping it
	lease(1, "198.18.1.0/24")    // this host's own
	rec(1, "x", "198.18.9.0/24") // this host's own record
	d := flannel.ReservationData{Host: "h3", Network: "b"}
	store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.18.5.0/24"), Raw: flannel.Lease{BackendType: flannel.BackendReservation},
		PublicIP: netip.IPv4Unspecified(), Reservation: &d}, "test")

	c := New(nil, store, Options{Host: "h1"})
	p := c.desired()
	self := c.self(store.Link())
	all, _ := overlay.All(self, store.Networks(), store.Leases())
	want := overlay.L2Of(all)
	if len(want.FDB) < 4 {
		t.Fatalf("fixture: L2Of wants only %v", want.FDB)
	}
	if !maps.Equal(p.l2.FDB, want.FDB) {
		t.Errorf("FDB %v, whole snapshot %v", p.l2.FDB, want.FDB)
	}
	if !maps.Equal(p.l2.Neigh, want.Neigh) {
		t.Errorf("Neigh %v, whole snapshot %v", p.l2.Neigh, want.Neigh)
	}
	if !maps.EqualFunc(p.l2.ByMAC, want.ByMAC, slices.Equal) {
		t.Errorf("ByMAC %v, whole snapshot %v", p.l2.ByMAC, want.ByMAC)
	}
	for _, s := range all {
		if s.Source != overlay.FromRecord {
			continue
		}
		if _, ok := c.ownFDB[s.MAC()]; !ok {
			t.Errorf("FDB entry of record VTEP %s not marked ours", s.MAC())
		}
		if _, ok := c.ownNeigh[neighEntry{s.Gateway(), s.MAC()}]; !ok {
			t.Errorf("neighbour %s of record VTEP %s not marked ours", s.Gateway(), s.MAC())
		}
	}
}
