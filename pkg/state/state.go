// Package state holds the daemon's view of the world: this host's Docker
// networks, every network record and flannel lease in etcd, host records and
// the VXLAN device's facts.
//
// Watchers are the writers (one per source); controllers read by key. Every
// change is published as an Event to the subscribers (the manager), which map
// it to the keys of the controllers it concerns. All fields are guarded by mu;
// subscribers are called after the lock is released, in the writer's
// goroutine, and must not block.
package state

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// LocalNetwork is an eligible Docker network of this host.
type LocalNetwork struct {
	ID, Name string
	Subnet   netip.Prefix
	Gateway  netip.Addr // zero when Docker gave none
	Bridge   string     // the Linux bridge, e.g. br-0123456789ab
	Groups   []string   // isolation groups (registry.GroupLabel), sorted; nil: ungrouped
}

// Lease is a valid flannel lease (a vxlan lease of some flanneld, our own
// reservation, or a lease of another backend).
type Lease struct {
	Subnet      netip.Prefix // the IPv4 subnet
	Subnet6     netip.Prefix // the IPv6 subnet of a dual-stack lease key, else invalid
	Raw         flannel.Lease
	PublicIP    netip.Addr
	VNI         int              // vxlan only
	VtepMAC     net.HardwareAddr // vxlan only
	Reservation *flannel.ReservationData
}

// IsVXLAN says whether flanneld routes this lease.
func (l Lease) IsVXLAN() bool { return l.Raw.BackendType == flannel.BackendVXLAN }

// Link is what we observed of the VXLAN device.
type Link struct {
	Name    string
	Present bool
	Up      bool
	Index   int
	MAC     net.HardwareAddr
	Local   netip.Addr // the device's VXLAN source address
	MTU     int
	VNI     int
}

// Kind is what an Event is about.
type Kind int

// Kinds of events.
const (
	KindLocal    Kind = iota + 1 // Key: network name
	KindNetwork                  // Key: etcd key of a network record
	KindLease                    // Key: subnet prefix string
	KindHost                     // Key: host name
	KindLink                     // Key: interface name
	KindSynced                   // Key: source name ("docker", "etcd")
	KindUnderlay                 // Key: "underlay" or "flannel-network": the policy's facts
)

// Event describes one change. Old and New are nil when the item was absent
// before or after the change; otherwise they hold the item by value
// (LocalNetwork, registry.Network, Lease, registry.HostRecord or Link).
type Event struct {
	Kind     Kind
	Key      string
	Trigger  string
	Old, New any
}

// Store is the snapshot. The zero value is not usable; call New.
type Store struct {
	mu       sync.RWMutex
	local    map[string]LocalNetwork
	networks map[string]registry.Network // by etcd key
	bySubnet map[netip.Prefix][]string   // record keys by subnet
	leases   map[netip.Prefix]Lease
	// vxlanByMAC and vxlanByIP index the vxlan leases by VtepMAC (string
	// form) and PublicIP, so "does this host's flanneld hold a lease?" is O(1).
	vxlanByMAC map[string][]netip.Prefix
	vxlanByIP  map[netip.Addr][]netip.Prefix
	// recordsByMAC indexes the records' subnets by VtepMAC (string form),
	// so the decisions of one VTEP cost O(its subnets), not O(records).
	recordsByMAC map[string]map[netip.Prefix]int
	hosts        map[string]registry.HostRecord
	// hostsByMAC indexes the host records by VtepMAC (canonical string
	// form): the trust boundary asks for every record which hosts name its
	// VTEP, and a scan of every host record there made a cold start of
	// 2,000 hosts' records quadratic (2 minutes).
	hostsByMAC map[string]map[string]struct{}
	link       Link
	synced     map[string]bool
	idx        claimIndex // overlaps and VTEP addresses (claims.go)
	underlay   Underlay
	flannelNet netip.Prefix

	subsMu sync.Mutex // guards subs; separate so subscribers may read the store
	subs   []func(Event)

	// version counts published changes; bumped before subscribers run, so a
	// reader that sees an unchanged Version after an event's keys were
	// enqueued has not missed that event.
	version atomic.Uint64
}

// New returns an empty store.
func New() *Store {
	return &Store{
		local:    map[string]LocalNetwork{},
		networks: map[string]registry.Network{},
		bySubnet: map[netip.Prefix][]string{},
		leases:   map[netip.Prefix]Lease{},
		hosts:    map[string]registry.HostRecord{},
		synced:   map[string]bool{},

		hostsByMAC: map[string]map[string]struct{}{},

		vxlanByMAC: map[string][]netip.Prefix{},
		vxlanByIP:  map[netip.Addr][]netip.Prefix{},
		idx:        newClaimIndex(),

		recordsByMAC: map[string]map[netip.Prefix]int{},
	}
}

// Subscribe registers fn for every later change.
func (s *Store) Subscribe(fn func(Event)) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.subs = append(s.subs, fn)
}

func (s *Store) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	s.version.Add(1)
	subs := s.subscribers()
	for _, ev := range evs {
		s.emit(subs, ev)
	}
}

func (s *Store) subscribers() []func(Event) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	return slices.Clone(s.subs)
}

func (s *Store) emit(subs []func(Event), ev Event) {
	for _, fn := range subs {
		fn(ev)
	}
}

// ---- writers ----

// ReplaceLocal sets the full list of local networks (after a Docker list).
func (s *Store) ReplaceLocal(nets []LocalNetwork, trigger string) {
	want := make(map[string]LocalNetwork, len(nets))
	for _, n := range nets {
		want[n.Name] = n
	}
	s.mu.Lock()
	evs := diff(KindLocal, s.local, want, trigger, localEqual, sameKey)
	s.local = want
	s.mu.Unlock()
	s.publish(evs)
}

// PutLocal adds or updates one local network.
func (s *Store) PutLocal(n LocalNetwork, trigger string) {
	put(s, &s.local, KindLocal, n.Name, n.Name, n, localEqual, trigger)
}

// DeleteLocal removes one local network by name.
func (s *Store) DeleteLocal(name, trigger string) {
	remove(s, &s.local, KindLocal, name, name, trigger)
}

// EtcdView is the full content of our prefixes after an etcd list.
type EtcdView struct {
	Networks map[string]registry.Network
	Leases   map[netip.Prefix]Lease
	Hosts    map[string]registry.HostRecord
}

// ReplaceEtcd sets everything read from etcd at once (after a list or re-list).
func (s *Store) ReplaceEtcd(v EtcdView, trigger string) {
	if v.Networks == nil {
		v.Networks = map[string]registry.Network{}
	}
	if v.Leases == nil {
		v.Leases = map[netip.Prefix]Lease{}
	}
	if v.Hosts == nil {
		v.Hosts = map[string]registry.HostRecord{}
	}
	s.mu.Lock()
	oldNets, oldLeases, oldHosts := s.networks, s.leases, s.hosts
	// Only the keys that changed are collected here; each event is built
	// when it is published. A cold start of 10,000 items held 10,000
	// events with a copy of each item at once (3 MB of live heap at the
	// daemon's peak).
	nets := changed(oldNets, v.Networks, networkEqual)
	leases := changed(oldLeases, v.Leases, leaseEqual)
	hosts := changed(oldHosts, v.Hosts, hostEqual)
	s.networks = v.Networks
	// Sized up front: grown by doubling, the indexes of 10,000 items
	// left their smaller tables as garbage at the daemon's peak.
	s.bySubnet = make(map[netip.Prefix][]string, len(v.Networks))
	s.recordsByMAC = map[string]map[netip.Prefix]int{}
	s.idx = newClaimIndex()
	for k, n := range v.Networks {
		s.indexNetwork(k, n)
	}
	s.leases = v.Leases
	vxlan := 0
	for _, l := range v.Leases {
		if l.IsVXLAN() {
			vxlan++
		}
	}
	s.vxlanByMAC = make(map[string][]netip.Prefix, vxlan)
	s.vxlanByIP = make(map[netip.Addr][]netip.Prefix, vxlan)
	for _, l := range v.Leases {
		s.indexLease(l)
	}
	s.hosts = v.Hosts
	s.hostsByMAC = map[string]map[string]struct{}{}
	for _, h := range v.Hosts {
		s.indexHost(h, 1)
	}
	s.mu.Unlock()
	if len(nets)+len(leases)+len(hosts) == 0 {
		return
	}
	s.version.Add(1)
	subs := s.subscribers()
	for _, k := range nets {
		s.emit(subs, replaced(s, KindNetwork, k, k, trigger, oldNets, &s.networks))
	}
	for _, p := range leases {
		s.emit(subs, replaced(s, KindLease, p, p.String(), trigger, oldLeases, &s.leases))
	}
	for _, h := range hosts {
		s.emit(subs, replaced(s, KindHost, h, h, trigger, oldHosts, &s.hosts))
	}
}

// PutNetwork adds or updates a network record.
func (s *Store) PutNetwork(key string, n registry.Network, trigger string) {
	s.mu.Lock()
	old, had := s.networks[key]
	if had {
		s.unindexNetwork(key, old)
	}
	s.networks[key] = n
	s.indexNetwork(key, n)
	s.mu.Unlock()
	if had && networkEqual(old, n) {
		return
	}
	s.publish([]Event{event(KindNetwork, key, trigger, old, had, n, true)})
}

// DeleteNetwork removes a network record by etcd key.
func (s *Store) DeleteNetwork(key, trigger string) {
	s.mu.Lock()
	old, had := s.networks[key]
	if had {
		s.unindexNetwork(key, old)
		delete(s.networks, key)
	}
	s.mu.Unlock()
	if had {
		s.publish([]Event{event(KindNetwork, key, trigger, old, true, nil, false)})
	}
}

// PutLease adds or updates a flannel lease.
func (s *Store) PutLease(l Lease, trigger string) {
	s.mu.Lock()
	old, had := s.leases[l.Subnet]
	if had {
		s.unindexLease(old)
	}
	s.leases[l.Subnet] = l
	s.indexLease(l)
	s.mu.Unlock()
	if had && leaseEqual(old, l) {
		return
	}
	s.publish([]Event{event(KindLease, l.Subnet.String(), trigger, old, had, l, true)})
}

// DeleteLease removes the lease of p.
func (s *Store) DeleteLease(p netip.Prefix, trigger string) {
	s.mu.Lock()
	old, had := s.leases[p]
	if had {
		s.unindexLease(old)
		delete(s.leases, p)
	}
	s.mu.Unlock()
	if had {
		s.publish([]Event{event(KindLease, p.String(), trigger, old, true, nil, false)})
	}
}

// PutHost adds or updates a host record.
func (s *Store) PutHost(h registry.HostRecord, trigger string) {
	s.mu.Lock()
	old, had := s.hosts[h.Host]
	if had {
		s.indexHost(old, -1)
	}
	s.hosts[h.Host] = h
	s.indexHost(h, 1)
	s.mu.Unlock()
	if had && hostEqual(old, h) {
		return
	}
	s.publish([]Event{event(KindHost, h.Host, trigger, old, had, h, true)})
}

// DeleteHost removes a host record.
func (s *Store) DeleteHost(host, trigger string) {
	s.mu.Lock()
	old, had := s.hosts[host]
	if had {
		s.indexHost(old, -1)
		delete(s.hosts, host)
	}
	s.mu.Unlock()
	if had {
		s.publish([]Event{event(KindHost, host, trigger, old, true, nil, false)})
	}
}

// put sets m[k] = v and publishes the change, if any, as key. m points at
// the field rather than holding the map because the Replace methods swap the
// maps: it is read under s.mu only.
func put[K comparable, V any](s *Store, m *map[K]V, kind Kind, k K, key string, v V, eq func(a, b V) bool, trigger string) {
	s.mu.Lock()
	old, had := (*m)[k]
	(*m)[k] = v
	s.mu.Unlock()
	if had && eq(old, v) {
		return
	}
	s.publish([]Event{event(kind, key, trigger, old, had, v, true)})
}

// remove deletes m[k] and publishes the removal, if any, as key (see put).
func remove[K comparable, V any](s *Store, m *map[K]V, kind Kind, k K, key, trigger string) {
	s.mu.Lock()
	old, had := (*m)[k]
	delete(*m, k)
	s.mu.Unlock()
	if had {
		s.publish([]Event{event(kind, key, trigger, old, true, nil, false)})
	}
}

// SetLink records the VXLAN device's facts.
func (s *Store) SetLink(l Link, trigger string) {
	s.mu.Lock()
	old := s.link
	s.link = l
	s.mu.Unlock()
	if linkEqual(old, l) {
		return
	}
	s.publish([]Event{{Kind: KindLink, Key: l.Name, Trigger: trigger, Old: old, New: l}})
}

// SetSynced marks a source ("docker", "etcd") as listed at least once.
func (s *Store) SetSynced(source, trigger string) {
	s.mu.Lock()
	was := s.synced[source]
	s.synced[source] = true
	s.mu.Unlock()
	if !was {
		s.publish([]Event{{Kind: KindSynced, Key: source, Trigger: trigger}})
	}
}

// ---- readers ----

// Version changes whenever the store publishes a change. Readers use it to
// cache what they derive from the whole snapshot (read Version first, then
// the data, and label the result with that version).
func (s *Store) Version() uint64 { return s.version.Load() }

// Synced says whether source has been listed at least once.
func (s *Store) Synced(source string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced[source]
}

// Local returns the local network called name.
func (s *Store) Local(name string) (LocalNetwork, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.local[name]
	return n, ok
}

// LocalNetworks returns every local network, sorted by name.
func (s *Store) LocalNetworks() []LocalNetwork {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := slices.AppendSeq(make([]LocalNetwork, 0, len(s.local)), maps.Values(s.local))
	slices.SortFunc(out, func(a, b LocalNetwork) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LocalOverlapping returns the local networks whose subnet overlaps p.
func (s *Store) LocalOverlapping(p netip.Prefix) []LocalNetwork {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []LocalNetwork
	for _, n := range s.local {
		if n.Subnet.Overlaps(p) {
			out = append(out, n)
		}
	}
	return out
}

// Network returns the network record at key.
func (s *Store) Network(key string) (registry.Network, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.networks[key]
	return n, ok
}

// KeyedNetwork is a network record with its etcd key.
type KeyedNetwork struct {
	Key string
	registry.Network
}

// NetworksBySubnet returns every record claiming exactly p, sorted by key.
func (s *Store) NetworksBySubnet(p netip.Prefix) []KeyedNetwork {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := s.bySubnet[p]
	if len(keys) == 0 {
		return nil
	}
	out := make([]KeyedNetwork, 0, len(keys))
	for _, k := range keys {
		out = append(out, KeyedNetwork{Key: k, Network: s.networks[k]})
	}
	slices.SortFunc(out, func(a, b KeyedNetwork) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Networks returns every network record, sorted by key.
func (s *Store) Networks() []KeyedNetwork {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]KeyedNetwork, 0, len(s.networks))
	for k, n := range s.networks {
		out = append(out, KeyedNetwork{Key: k, Network: n})
	}
	slices.SortFunc(out, func(a, b KeyedNetwork) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Lease returns the flannel lease of p.
func (s *Store) Lease(p netip.Prefix) (Lease, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.leases[p]
	return l, ok
}

// Leases returns every lease, sorted by subnet.
func (s *Store) Leases() []Lease {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Sized up front: at 10,000 leases a copy grown by appending allocated
	// 2.5 times the final 2 MB, and every whole-snapshot reader copies.
	out := slices.AppendSeq(make([]Lease, 0, len(s.leases)), maps.Values(s.leases))
	slices.SortFunc(out, func(a, b Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out
}

// VXLANLeaseWithMAC returns a vxlan lease whose VtepMAC is mac (the one of
// the lowest subnet when several are). With mac the VXLAN device's own, it
// tells whether the store sees this host's flanneld, and so flanneld's
// registry.
func (s *Store) VXLANLeaseWithMAC(mac net.HardwareAddr) (Lease, bool) {
	if len(mac) == 0 {
		return Lease{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.firstLease(s.vxlanByMAC[mac.String()])
}

// VXLANLeaseWithPublicIP returns a vxlan lease whose PublicIP is ip (the one
// of the lowest subnet when several are).
func (s *Store) VXLANLeaseWithPublicIP(ip netip.Addr) (Lease, bool) {
	if !ip.IsValid() {
		return Lease{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.firstLease(s.vxlanByIP[ip])
}

// firstLease returns the lease of the lowest of ps; s.mu must be held.
func (s *Store) firstLease(ps []netip.Prefix) (Lease, bool) {
	var best netip.Prefix
	for _, p := range ps {
		if !best.IsValid() || p.Addr().Less(best.Addr()) || (p.Addr() == best.Addr() && p.Bits() < best.Bits()) {
			best = p
		}
	}
	if !best.IsValid() {
		return Lease{}, false
	}
	return s.leases[best], true
}

// Host returns the host record of host.
func (s *Store) Host(host string) (registry.HostRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.hosts[host]
	return h, ok
}

// Hosts returns every host record.
func (s *Store) Hosts() []registry.HostRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := slices.AppendSeq(make([]registry.HostRecord, 0, len(s.hosts)), maps.Values(s.hosts))
	slices.SortFunc(out, func(a, b registry.HostRecord) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// Link returns the VXLAN device's facts.
func (s *Store) Link() Link {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.link
}
