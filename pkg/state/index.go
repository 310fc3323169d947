package state

// This file: the store's indexes (and their readers), events and equality.

import (
	"net/netip"
	"slices"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// SubnetsWithMAC returns, sorted, the subnets of the records and vxlan
// leases whose VtepMAC is mac (string form, lowercase).
func (s *Store) SubnetsWithMAC(mac string) []netip.Prefix {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]netip.Prefix, 0, len(s.recordsByMAC[mac])+len(s.vxlanByMAC[mac]))
	for p := range s.recordsByMAC[mac] {
		out = append(out, p)
	}
	for _, p := range s.vxlanByMAC[mac] {
		if _, dup := s.recordsByMAC[mac][p]; !dup {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Subnets returns, in no order, every subnet a network record or a lease
// names, each once, read from the indexes (no copy of the records or
// leases).
func (s *Store) Subnets() []netip.Prefix {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]netip.Prefix, 0, len(s.bySubnet)+len(s.leases))
	for p := range s.bySubnet {
		out = append(out, p)
	}
	for p := range s.leases {
		if _, dup := s.bySubnet[p]; !dup {
			out = append(out, p)
		}
	}
	return out
}

// VTEPMACs returns, sorted, the VTEP MACs (string form, lowercase) that a
// network record or a vxlan lease names: every remote VTEP the snapshot can
// want, read from the indexes (no copy of the records or leases).
func (s *Store) VTEPMACs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.recordsByMAC)+len(s.vxlanByMAC))
	for m := range s.recordsByMAC {
		out = append(out, m)
	}
	for m := range s.vxlanByMAC {
		if _, dup := s.recordsByMAC[m]; !dup {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Store) indexNetwork(key string, n registry.Network) {
	s.idx.add(n.Subnet, n.PublicIP, 1)
	countIndex(s.recordsByMAC, n.VtepMAC.String(), n.Subnet, 1)
	addIndex(s.bySubnet, n.Subnet, key)
}

func (s *Store) unindexNetwork(key string, n registry.Network) {
	s.idx.add(n.Subnet, n.PublicIP, -1)
	countIndex(s.recordsByMAC, n.VtepMAC.String(), n.Subnet, -1)
	dropIndex(s.bySubnet, n.Subnet, key)
}

// indexLease adds a vxlan lease to the MAC and PublicIP indexes.
func (s *Store) indexLease(l Lease) {
	if !l.IsVXLAN() {
		s.idx.add(l.Subnet, netip.Addr{}, 1)
		return
	}
	s.idx.add(l.Subnet, l.PublicIP, 1)
	if len(l.VtepMAC) > 0 {
		addIndex(s.vxlanByMAC, l.VtepMAC.String(), l.Subnet)
	}
	if l.PublicIP.IsValid() {
		addIndex(s.vxlanByIP, l.PublicIP, l.Subnet)
	}
}

func (s *Store) unindexLease(l Lease) {
	if !l.IsVXLAN() {
		s.idx.add(l.Subnet, netip.Addr{}, -1)
		return
	}
	s.idx.add(l.Subnet, l.PublicIP, -1)
	if len(l.VtepMAC) > 0 {
		dropIndex(s.vxlanByMAC, l.VtepMAC.String(), l.Subnet)
	}
	if l.PublicIP.IsValid() {
		dropIndex(s.vxlanByIP, l.PublicIP, l.Subnet)
	}
}

// countIndex counts the records naming (k, p): several records may claim
// one subnet behind one VTEP.
func countIndex(idx map[string]map[netip.Prefix]int, k string, p netip.Prefix, delta int) {
	m := idx[k]
	if m == nil {
		m = map[netip.Prefix]int{}
		idx[k] = m
	}
	if m[p] += delta; m[p] <= 0 {
		delete(m, p)
	}
	if len(m) == 0 {
		delete(idx, k)
	}
}

// addIndex and dropIndex keep small sets as slices: an index entry holds
// one value in the common case (one lease per VTEP, one record per subnet),
// and 10,000 one-entry maps cost about 200 bytes each where a one-entry
// slice costs 16 or 32 (6 MB of live heap, twice that at peak, at 10,000
// flannel leases).
func addIndex[K, V comparable](idx map[K][]V, k K, v V) {
	if !slices.Contains(idx[k], v) {
		idx[k] = append(idx[k], v)
	}
}

func dropIndex[K, V comparable](idx map[K][]V, k K, v V) {
	vs := idx[k]
	i := slices.Index(vs, v)
	switch {
	case i < 0:
	case len(vs) == 1:
		delete(idx, k)
	default:
		idx[k] = slices.Delete(vs, i, i+1)
	}
}

func event[T any](kind Kind, key, trigger string, old T, had bool, nw any, has bool) Event {
	ev := Event{Kind: kind, Key: key, Trigger: trigger}
	if had {
		ev.Old = old
	}
	if has {
		ev.New = nw
	}
	return ev
}

// diff returns the events that turn old into want; key names a map key in
// an Event.
func diff[K comparable, T any](kind Kind, old, want map[K]T, trigger string, eq func(a, b T) bool, key func(K) string) []Event {
	var evs []Event
	for k, o := range old {
		if n, ok := want[k]; !ok {
			evs = append(evs, Event{Kind: kind, Key: key(k), Trigger: trigger, Old: o})
		} else if !eq(o, n) {
			evs = append(evs, Event{Kind: kind, Key: key(k), Trigger: trigger, Old: o, New: n})
		}
	}
	for k, n := range want {
		if _, ok := old[k]; !ok {
			evs = append(evs, Event{Kind: kind, Key: key(k), Trigger: trigger, New: n})
		}
	}
	return evs
}

// changed returns the keys whose item was added, removed or updated
// between old and want.
func changed[K comparable, T any](old, want map[K]T, eq func(a, b T) bool) []K {
	var out []K
	for k, o := range old {
		if n, ok := want[k]; !ok || !eq(o, n) {
			out = append(out, k)
		}
	}
	for k := range want {
		if _, ok := old[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// replaced is the event of key k after a Replace: Old from the map the
// store no longer holds (no writer touches it again), New from the store's
// map now (cur is the field: the store may have swapped it since).
func replaced[K comparable, V any](s *Store, kind Kind, k K, key, trigger string, old map[K]V, cur *map[K]V) Event {
	o, had := old[k]
	s.mu.RLock()
	n, has := (*cur)[k]
	s.mu.RUnlock()
	return event(kind, key, trigger, o, had, n, has)
}

func sameKey(k string) string { return k }

func localEqual(a, b LocalNetwork) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Subnet == b.Subnet && a.Gateway == b.Gateway &&
		a.Bridge == b.Bridge && slices.Equal(a.Groups, b.Groups)
}

func hostEqual(a, b registry.HostRecord) bool { return a == b }

func networkEqual(a, b registry.Network) bool {
	return a.Host == b.Host && a.Network == b.Network && a.NetworkID == b.NetworkID &&
		a.Subnet == b.Subnet && a.Gateway == b.Gateway && a.PublicIP == b.PublicIP &&
		a.VtepMAC.String() == b.VtepMAC.String() && a.VNI == b.VNI && slices.Equal(a.Groups, b.Groups)
}

func leaseEqual(a, b Lease) bool {
	return a.Subnet == b.Subnet && a.Subnet6 == b.Subnet6 && a.PublicIP == b.PublicIP && a.VNI == b.VNI &&
		a.VtepMAC.String() == b.VtepMAC.String() && a.Raw.BackendType == b.Raw.BackendType &&
		string(a.Raw.BackendData) == string(b.Raw.BackendData) && reservationEqual(a.Reservation, b.Reservation)
}

// reservationEqual compares the decoded reservations: the watcher drops
// the backend data bytes a reservation was decoded from.
func reservationEqual(a, b *flannel.ReservationData) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func linkEqual(a, b Link) bool {
	return a.Name == b.Name && a.Present == b.Present && a.Up == b.Up && a.Index == b.Index &&
		a.MAC.String() == b.MAC.String() && a.Local == b.Local && a.MTU == b.MTU && a.VNI == b.VNI
}
