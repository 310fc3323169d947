package state

import (
	"net/netip"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// ReplaceEtcd publishes one event per added, updated or removed item, with
// the item before (Old) and after (New), networks before leases before
// hosts, and changes the version once; unchanged items publish nothing.
func TestReplaceEtcdEvents(t *testing.T) {
	s := New()
	p1, p2, p3 := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.2.0/24"), netip.MustParsePrefix("198.19.3.0/24")
	res := func(p netip.Prefix, host string) Lease {
		d := flannel.ReservationData{Host: host, Network: "n"}
		return Lease{Subnet: p, Raw: flannel.Lease{BackendType: flannel.BackendReservation}, PublicIP: netip.IPv4Unspecified(), Reservation: &d}
	}
	s.ReplaceEtcd(EtcdView{
		Networks: map[string]registry.Network{"/p/a/x": netRec("a", "x", p1.String()), "/p/b/x": netRec("b", "x", p2.String())},
		Leases:   map[netip.Prefix]Lease{p1: res(p1, "a"), p2: res(p2, "b")},
		Hosts:    map[string]registry.HostRecord{"a": {Host: "a", PublicIP: "198.51.100.1"}},
	}, "etcd:list")
	var r recorder
	s.Subscribe(r.add)
	v := s.Version()
	moved := netRec("b", "x", p3.String())
	s.ReplaceEtcd(EtcdView{
		// a/x unchanged, b/x moved to p3, c/x new.
		Networks: map[string]registry.Network{"/p/a/x": netRec("a", "x", p1.String()), "/p/b/x": moved, "/p/c/x": netRec("c", "x", p2.String())},
		// p1's reservation names another host now (only the decoded
		// reservation differs: no backend data bytes), p2's is gone.
		Leases: map[netip.Prefix]Lease{p1: res(p1, "c")},
		Hosts:  map[string]registry.HostRecord{"a": {Host: "a", PublicIP: "198.51.100.1"}},
	}, "etcd:relist")
	if got := s.Version(); got != v+1 {
		t.Fatalf("version %d -> %d, want one change", v, got)
	}
	evs := r.take()
	type want struct {
		kind     Kind
		key      string
		old, new bool
	}
	var got []want
	for _, ev := range evs {
		got = append(got, want{ev.Kind, ev.Key, ev.Old != nil, ev.New != nil})
		if ev.Trigger != "etcd:relist" {
			t.Errorf("event %s: trigger %q", ev.Key, ev.Trigger)
		}
	}
	byKey := map[string]Event{}
	for _, ev := range evs {
		byKey[ev.Key] = ev
	}
	if len(evs) != 4 {
		t.Fatalf("events %+v, want b/x updated, c/x added, p1 updated, p2 removed", got)
	}
	if evs[0].Kind != KindNetwork || evs[1].Kind != KindNetwork || evs[2].Kind != KindLease || evs[3].Kind != KindLease {
		t.Fatalf("event order %+v: networks first, then leases", got)
	}
	if ev := byKey["/p/b/x"]; ev.Old.(registry.Network).Subnet != p2 || ev.New.(registry.Network).Subnet != p3 {
		t.Fatalf("b/x event %+v", ev)
	}
	if ev := byKey["/p/c/x"]; ev.Old != nil || ev.New.(registry.Network).Host != "c" {
		t.Fatalf("c/x event %+v", ev)
	}
	if ev := byKey[p1.String()]; ev.Old.(Lease).Reservation.Host != "a" || ev.New.(Lease).Reservation.Host != "c" {
		t.Fatalf("p1 event %+v", ev)
	}
	if ev := byKey[p2.String()]; ev.New != nil || ev.Old.(Lease).Reservation.Host != "b" {
		t.Fatalf("p2 event %+v", ev)
	}
	// The same content again: no event, no version change.
	v = s.Version()
	s.ReplaceEtcd(EtcdView{
		Networks: map[string]registry.Network{"/p/a/x": netRec("a", "x", p1.String()), "/p/b/x": moved, "/p/c/x": netRec("c", "x", p2.String())},
		Leases:   map[netip.Prefix]Lease{p1: res(p1, "c")},
		Hosts:    map[string]registry.HostRecord{"a": {Host: "a", PublicIP: "198.51.100.1"}},
	}, "etcd:relist")
	if evs := r.take(); len(evs) != 0 || s.Version() != v {
		t.Fatalf("identical re-list: %d events, version %d -> %d", len(evs), v, s.Version())
	}
}
