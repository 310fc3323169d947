package overlay

import (
	"net/netip"
	"slices"
)

// L2 is the link-layer state the remote subnets need on the VXLAN device:
// one FDB entry per VTEP and one neighbour per subnet gateway.
type L2 struct {
	FDB   map[string]netip.Addr   // VTEP MAC -> its PublicIP (bridge fdb dst)
	Neigh map[netip.Addr]string   // neighbour IP (subnet network address) -> VTEP MAC
	ByMAC map[string][]netip.Addr // VTEP MAC -> its neighbour IPs, sorted
}

// L2Of derives the link-layer state from the remote subnets. Ties are broken
// so the result does not depend on map order: a gateway shared by subnets of
// different lengths takes the most specific subnet's VTEP; a MAC announced
// with different PublicIPs takes that of a record over a lease, then that of
// the lowest subnet.
func L2Of(subnets map[netip.Prefix]Subnet) L2 {
	l2 := L2{FDB: map[string]netip.Addr{}, Neigh: map[netip.Addr]string{}, ByMAC: map[string][]netip.Addr{}}
	ps := make([]netip.Prefix, 0, len(subnets))
	for p := range subnets {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		sa, sb := subnets[a], subnets[b]
		if sa.Source != sb.Source {
			return int(sa.Source) - int(sb.Source) // records first
		}
		return ComparePrefix(a, b)
	})
	gwOwner := map[netip.Addr]netip.Prefix{}
	for _, p := range ps {
		s := subnets[p]
		mac := s.MAC()
		if _, ok := l2.FDB[mac]; !ok {
			l2.FDB[mac] = s.PublicIP
		}
		gw := s.Gateway()
		if o, ok := gwOwner[gw]; !ok || p.Bits() > o.Bits() {
			gwOwner[gw] = p
			l2.Neigh[gw] = mac
		}
	}
	for gw, mac := range l2.Neigh {
		l2.ByMAC[mac] = append(l2.ByMAC[mac], gw)
	}
	for mac := range l2.FDB {
		slices.SortFunc(l2.ByMAC[mac], netip.Addr.Compare)
	}
	return l2
}
