package overlay

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// storeOf loads records and leases into a real store (the Index the
// controllers use).
func storeOf(records []state.KeyedNetwork, leases []state.Lease) *state.Store {
	s := state.New()
	nets := map[string]registry.Network{}
	for _, r := range records {
		nets[r.Key] = r.Network
	}
	ls := map[netip.Prefix]state.Lease{}
	for _, l := range leases {
		ls[l.Subnet] = l
	}
	s.ReplaceEtcd(state.EtcdView{Networks: nets, Leases: ls}, "test")
	return s
}

// The per-key decisions (At, VTEP, VTEPL2, NeighOwner) agree with the
// whole-snapshot ones (All, L2Of) on every subnet, VTEP and neighbour:
// records share their VTEP's lowest subnet's address, leases keep their own.
func TestPerKeyAgreesWithAll(t *testing.T) {
	records := []state.KeyedNetwork{
		rec("h2", "a", "198.18.2.0/24", 2), rec("h2", "b", "198.18.3.0/24", 2), rec("h2", "c", "198.18.4.0/25", 2),
		rec("h3", "a", "198.18.3.0/24", 3), // disagrees with h2/b: conflict
		rec("h3", "b", "198.18.5.0/24", 3), rec("h4", "a", "198.18.5.0/24", 4),
		rec("h5", "a", "198.18.7.0/24", 5), rec("h5", "b", "198.18.10.0/24", 5),
	}
	leases := []state.Lease{
		vxlanLease("198.18.8.0/24", 6), vxlanLease("198.18.7.0/24", 7), vxlanLease("198.18.9.0/24", 2),
		reservation("198.18.5.0/24", "h4"), reservation("198.18.2.0/24", "h2"),
	}
	all, _ := All(self, records, leases)
	l2 := L2Of(all)
	idx := storeOf(records, leases)
	cache := &VTEPCache{}
	for _, r := range []Resolver{{Self: self, Index: idx}, {Self: self, Index: idx, Cache: cache, Version: idx.Version()}} {
		for p, want := range all {
			got, ok, _ := r.At(p)
			if !ok || got.Gateway() != want.Gateway() || got.MAC() != want.MAC() || got.PublicIP != want.PublicIP {
				t.Errorf("At(%s) = %+v, %v; All has %+v", p, got, ok, want)
			}
		}
		for mac, dst := range l2.FDB {
			gotDst, ok, neighs := r.VTEPL2(mac)
			if !ok || gotDst != dst || !slices.Equal(neighs, l2.ByMAC[mac]) {
				t.Errorf("VTEPL2(%s) = %s, %v, %v; L2Of has %s, %v", mac, gotDst, ok, neighs, dst, l2.ByMAC[mac])
			}
		}
		for gw, mac := range l2.Neigh {
			if got, ok := r.NeighOwner(gw); !ok || got != mac {
				t.Errorf("NeighOwner(%s) = %q, %v; L2Of has %q", gw, got, ok, mac)
			}
		}
	}
	// The shape itself: h2's records via 198.18.2.0 (its lowest), its lease
	// via its own address; h5's records via 198.18.7.0 (without the trust
	// boundary a record beats the lease of another VTEP there).
	for p, gw := range map[string]string{"198.18.3.0/24": "", "198.18.4.0/25": "198.18.2.0", "198.18.2.0/24": "198.18.2.0",
		"198.18.9.0/24": "198.18.9.0", "198.18.10.0/24": "198.18.7.0"} {
		s, ok := all[netip.MustParsePrefix(p)]
		switch {
		case gw == "" && ok:
			t.Errorf("%s routed (%+v), want a conflict", p, s)
		case gw != "" && (!ok || s.Gateway() != netip.MustParseAddr(gw)):
			t.Errorf("%s via %s (%v), want via %s", p, s.Gateway(), ok, gw)
		}
	}
}

// The memo holds at most MaxVTEPCache VTEPs: one more starts it over (the
// newest answer kept), a VTEP already held is updated in place, and a newer
// version replaces everything.
func TestVTEPCacheBounded(t *testing.T) {
	var c VTEPCache
	mac := func(i int) string {
		return string(rune('a'+i%26)) + "-" + string(rune('a'+i/26%26)) + "-" + string(rune('a'+i/676))
	}
	sub := []Subnet{{Prefix: netip.MustParsePrefix("198.18.2.0/24")}}
	for i := range MaxVTEPCache {
		c.put(1, mac(i), sub)
	}
	if len(c.subs) != MaxVTEPCache {
		t.Fatalf("%d entries, want %d", len(c.subs), MaxVTEPCache)
	}
	c.put(1, mac(0), nil) // held already: no reset
	if got, ok := c.get(1, mac(1)); !ok || len(got) != 1 {
		t.Fatalf("an update of a held VTEP dropped the others (%v %v)", got, ok)
	}
	c.put(1, "new", sub)
	if len(c.subs) != 1 {
		t.Fatalf("%d entries after one beyond the bound, want 1 (start over)", len(c.subs))
	}
	if got, ok := c.get(1, "new"); !ok || len(got) != 1 {
		t.Fatal("the newest answer is not kept")
	}
	if _, ok := c.get(1, mac(1)); ok {
		t.Fatal("an entry from before the reset answers")
	}
	c.put(2, mac(1), sub)
	if _, ok := c.get(2, "new"); ok {
		t.Fatal("an answer of version 1 answers at version 2")
	}
}
