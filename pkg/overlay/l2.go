package overlay

import (
	"net/netip"
	"slices"
)

// L2 is the link-layer state the remote subnets need on the VXLAN device:
// one FDB entry per VTEP and one neighbour per gateway (per lease subnet,
// and one per VTEP for all its record subnets).
type L2 struct {
	FDB   map[string]netip.Addr   // VTEP MAC -> its PublicIP (bridge fdb dst)
	Neigh map[netip.Addr]string   // neighbour IP (gateway) -> VTEP MAC
	ByMAC map[string][]netip.Addr // VTEP MAC -> its neighbour IPs, sorted
}

// L2Of derives the link-layer state from the remote subnets (a record's
// gateway is its VTEP's shared one, see RecordVia). Ties are broken
// so the result does not depend on map order: a gateway wanted by subnets
// of different lengths takes the most specific subnet's VTEP (for a record
// VTEP's gateway, the subnet that defines it); a MAC announced with
// different PublicIPs takes that of a record over a lease, then that of the
// lowest subnet. The per-VTEP functions (vtep.go) decide the same.
func L2Of(subnets map[netip.Prefix]Subnet) L2 {
	l2 := L2{FDB: map[string]netip.Addr{}, Neigh: map[netip.Addr]string{}, ByMAC: map[string][]netip.Addr{}}
	ps := make([]netip.Prefix, 0, len(subnets))
	for p := range subnets {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return compareSubnets(subnets[a], subnets[b]) })
	via := map[string]netip.Prefix{} // VTEP MAC -> its lowest record subnet
	for _, p := range ps {
		s := subnets[p]
		if _, ok := via[s.MAC()]; !ok && s.Source == FromRecord {
			via[s.MAC()] = p
		}
	}
	gwOwner := map[netip.Addr]netip.Prefix{}
	for _, p := range ps {
		s := subnets[p]
		mac := s.MAC()
		if _, ok := l2.FDB[mac]; !ok {
			l2.FDB[mac] = s.PublicIP
		}
		def, gw := p, p.Addr()
		if s.Source == FromRecord {
			def = via[mac]
			gw = def.Addr()
		}
		if o, ok := gwOwner[gw]; !ok || def.Bits() > o.Bits() {
			gwOwner[gw] = def
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

// compareSubnets orders records before leases, then by prefix.
func compareSubnets(a, b Subnet) int {
	if a.Source != b.Source {
		return int(a.Source) - int(b.Source)
	}
	return ComparePrefix(a.Prefix, b.Prefix)
}
