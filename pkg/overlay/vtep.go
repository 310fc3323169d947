package overlay

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Index is what the per-key decisions look up in the snapshot
// (*state.Store satisfies it). With it, one subnet's or one VTEP's desired
// state costs O(the claims around it), not O(every record): a new network
// on a host with 10,000 remote subnets is decided as fast as on an empty one.
type Index interface {
	NetworksBySubnet(p netip.Prefix) []state.KeyedNetwork
	Lease(p netip.Prefix) (state.Lease, bool)
	Overlapping(p netip.Prefix) []netip.Prefix
	// SubnetsWithMAC returns the subnets of records and vxlan leases naming
	// the VTEP MAC (string form).
	SubnetsWithMAC(mac string) []netip.Prefix
}

// resolveAt resolves p from the claims on it, without the records' shared
// gateway.
func resolveAt(self Self, idx Index, p netip.Prefix) (Subnet, bool, *Conflict) {
	var lease *state.Lease
	if l, ok := idx.Lease(p); ok {
		lease = &l
	}
	return Resolve(self, p, idx.NetworksBySubnet(p), lease)
}

// Resolver answers the per-key questions for one version of the snapshot.
// Cache, when set, memoises VTEP per store version: a cold start or a
// resync asks for each VTEP once per subnet behind it, and the answer only
// changes when the store does.
type Resolver struct {
	Self    Self
	Index   Index
	Cache   *VTEPCache
	Version uint64 // the store's version, read before the data
}

// VTEPCache is the memo of Resolver.VTEP; the zero value is ready to use.
type VTEPCache struct {
	mu      sync.Mutex
	version uint64
	subs    map[string][]Subnet
}

func (c *VTEPCache) get(version uint64, mac string) ([]Subnet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs == nil || c.version != version {
		return nil, false
	}
	s, ok := c.subs[mac]
	return s, ok
}

func (c *VTEPCache) put(version uint64, mac string, subs []Subnet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs == nil || version > c.version {
		c.version, c.subs = version, map[string][]Subnet{}
	}
	if version == c.version {
		if _, ok := c.subs[mac]; !ok && len(c.subs) >= MaxVTEPCache {
			// Start over rather than hold every VTEP: a cold start of
			// 10,000 VTEPs happens at one version, so the memo held all
			// of them (2 MB at the daemon's peak) while its hits come
			// from repeated questions close together (a VTEP's other
			// subnets, the kernel's echo of our own writes).
			clear(c.subs)
		}
		c.subs[mac] = subs
	}
}

// MaxVTEPCache bounds a VTEPCache's entries: enough for the questions
// that come close together; at 4,096 the memo held all 2,000 VTEPs of the
// benchmark's records run (4.5 MB, a quarter of the daemon's peak heap).
const MaxVTEPCache = 512

// At is At with r's snapshot.
func (r Resolver) At(p netip.Prefix) (Subnet, bool, *Conflict) {
	s, ok, c := resolveAt(r.Self, r.Index, p)
	if ok && s.Source == FromRecord {
		s.Via = RecordVia(r.VTEP(s.MAC()))
	}
	return s, ok, c
}

// VTEP is VTEP with r's snapshot (memoised in r.Cache). The result is
// shared: callers must not modify it.
func (r Resolver) VTEP(mac string) []Subnet {
	if r.Cache != nil {
		if subs, ok := r.Cache.get(r.Version, mac); ok {
			return subs
		}
	}
	subs := VTEP(r.Self, r.Index, mac)
	if r.Cache != nil {
		r.Cache.put(r.Version, mac, subs)
	}
	return subs
}

// VTEPL2 is VTEPL2 with r's snapshot.
func (r Resolver) VTEPL2(mac string) (netip.Addr, bool, []netip.Addr) {
	return vtepL2(r, r.VTEP(mac), mac)
}

// NeighOwner is NeighOwner with r's snapshot.
func (r Resolver) NeighOwner(gw netip.Addr) (string, bool) { return neighOwner(r, gw) }

// At resolves p as All would: the remote subnet (with a record's shared
// gateway set, see RecordVia), ok false when p is not routed through the
// tunnel, and a conflict when claims disagree.
func At(self Self, idx Index, p netip.Prefix) (Subnet, bool, *Conflict) {
	return Resolver{Self: self, Index: idx}.At(p)
}

// VTEP returns the remote subnets that resolve to the VTEP mac, records
// first, then by prefix, with the records' shared gateway set.
func VTEP(self Self, idx Index, mac string) []Subnet {
	ps := idx.SubnetsWithMAC(mac)
	out := make([]Subnet, 0, len(ps)) // held by the cache: no room to grow
	for _, p := range ps {
		if s, ok, _ := resolveAt(self, idx, p); ok && s.MAC() == mac {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, compareSubnets)
	via := RecordVia(out)
	for i := range out {
		if out[i].Source == FromRecord {
			out[i].Via = via
		}
	}
	return out
}

// RecordVia is the gateway every record subnet behind one VTEP is routed
// through: the network address of its lowest record subnet (subs are one
// VTEP's). One gateway per VTEP, not one per subnet, because the kernel
// hashes a route's nexthop without its gateway: routes on one device with
// distinct gateways share one hash chain, and inserting 10,000 of them is
// quadratic (1.95 s), while the same routes over one gateway per VTEP take
// 0.12 s. The peer routes by destination, so the gateway only selects the
// neighbour (the VTEP MAC); the lowest subnet's address is the neighbour
// the per-subnet shape also had, so migrating to this shape keeps one.
func RecordVia(subs []Subnet) netip.Addr {
	var low netip.Prefix
	for _, s := range subs {
		if s.Source == FromRecord && (!low.IsValid() || ComparePrefix(s.Prefix, low) < 0) {
			low = s.Prefix
		}
	}
	if !low.IsValid() {
		return netip.Addr{}
	}
	return low.Addr()
}

// VTEPL2 is the link-layer state of one VTEP: its FDB destination (ok false
// when no subnet resolves to it) and the neighbours it owns, sorted.
func VTEPL2(self Self, idx Index, mac string) (dst netip.Addr, ok bool, neighs []netip.Addr) {
	r := Resolver{Self: self, Index: idx}
	return vtepL2(r, r.VTEP(mac), mac)
}

func vtepL2(r Resolver, subs []Subnet, mac string) (dst netip.Addr, ok bool, neighs []netip.Addr) {
	if len(subs) == 0 {
		return netip.Addr{}, false, nil
	}
	for _, s := range subs {
		gw := s.Gateway()
		if slices.Contains(neighs, gw) {
			continue
		}
		if owner, ok := neighOwner(r, gw); ok && owner == mac {
			neighs = append(neighs, gw)
		}
	}
	slices.SortFunc(neighs, netip.Addr.Compare)
	return subs[0].PublicIP, true, neighs
}

// NeighOwner returns the VTEP MAC the neighbour gw belongs to, as L2Of
// decides: among the subnets whose gateway is gw, the most specific (for a
// record VTEP's shared gateway, the subnet that defines it).
func NeighOwner(self Self, idx Index, gw netip.Addr) (string, bool) {
	return neighOwner(Resolver{Self: self, Index: idx}, gw)
}

func neighOwner(r Resolver, gw netip.Addr) (string, bool) {
	if !gw.IsValid() {
		return "", false
	}
	host := netip.PrefixFrom(gw, gw.BitLen())
	cands := append(r.Index.Overlapping(host), host)
	var best netip.Prefix
	mac := ""
	for _, q := range cands {
		if q.Addr() != gw || (best.IsValid() && q.Bits() <= best.Bits()) {
			continue
		}
		s, ok, _ := r.At(q)
		if !ok || s.Gateway() != gw {
			continue
		}
		best, mac = q, s.MAC()
	}
	return mac, best.IsValid()
}
