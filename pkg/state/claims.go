package state

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/gaissmai/bart"

	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// Underlay is what this host needs to reach its peers and etcd, observed
// from the kernel (the policy's Underlay).
type Underlay struct {
	Observed bool // false until the first observation
	policy.Underlay
}

// claimIndex finds overlapping claims and known VTEP addresses without a
// scan: both are prefix tables with reference counts.
type claimIndex struct {
	claims    *bart.Table[int] // record and lease subnets
	publicIPs *bart.Table[int] // record and vxlan lease PublicIPs, as /32
}

func newClaimIndex() claimIndex {
	return claimIndex{claims: new(bart.Table[int]), publicIPs: new(bart.Table[int])}
}

func count(t *bart.Table[int], p netip.Prefix, delta int) {
	if !p.IsValid() {
		return
	}
	t.Modify(p, func(n int, _ bool) (int, bool) {
		n += delta
		return n, n <= 0
	})
}

func (x claimIndex) add(subnet netip.Prefix, publicIP netip.Addr, delta int) {
	count(x.claims, subnet.Masked(), delta)
	if publicIP.IsValid() && publicIP.Is4() && !publicIP.IsUnspecified() {
		count(x.publicIPs, netip.PrefixFrom(publicIP, 32), delta)
	}
}

// Overlapping returns the claimed subnets (of records or leases) that
// overlap p, p itself excluded.
func (s *Store) Overlapping(p netip.Prefix) []netip.Prefix {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []netip.Prefix
	for q := range s.idx.claims.Supernets(p) {
		if q != p {
			out = append(out, q)
		}
	}
	for q := range s.idx.claims.Subnets(p) {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// PublicIPIn returns a known VTEP address inside p: of a record, a vxlan
// lease or a host record.
func (s *Store) PublicIPIn(p netip.Prefix) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for q := range s.idx.publicIPs.Subnets(p) {
		return q.Addr(), true
	}
	return netip.Addr{}, false
}

// SetUnderlay records the underlay facts.
func (s *Store) SetUnderlay(u Underlay, trigger string) {
	u.Observed = true
	s.mu.Lock()
	old := s.underlay
	s.underlay = u
	s.mu.Unlock()
	if underlayEqual(old, u) {
		return
	}
	s.publish([]Event{{Kind: KindUnderlay, Key: "underlay", Trigger: trigger, Old: old, New: u}})
}

// Underlay returns the underlay facts.
func (s *Store) Underlay() Underlay {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.underlay
}

// SetFlannelNetwork records flannel's Network (from <FLANNEL_PREFIX>/config).
func (s *Store) SetFlannelNetwork(p netip.Prefix, trigger string) {
	s.mu.Lock()
	old := s.flannelNet
	s.flannelNet = p
	s.mu.Unlock()
	if old != p {
		s.publish([]Event{{Kind: KindUnderlay, Key: "flannel-network", Trigger: trigger, Old: old, New: p}})
	}
}

// FlannelNetwork returns flannel's Network; zero when unknown.
func (s *Store) FlannelNetwork() netip.Prefix {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.flannelNet
}

// Facts returns what the policy checks subnets against.
func (s *Store) Facts() policy.Facts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return policy.Facts{FlannelNetwork: s.flannelNet, Underlay: s.underlay.Underlay, PublicIPIn: s.PublicIPIn}
}

func underlayEqual(a, b Underlay) bool {
	return a.Observed == b.Observed && equalSlices(a.Addrs, b.Addrs) && equalSlices(a.Routes, b.Routes) &&
		equalSlices(a.Gateways, b.Gateways) && equalSlices(a.Etcd, b.Etcd) && equalSlices(a.Peers, b.Peers)
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// HostsWithMAC returns the host records naming mac as their VTEP, sorted
// by host (an index lookup: it is asked once per record resolved).
func (s *Store) HostsWithMAC(mac net.HardwareAddr) []registry.HostRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := s.hostsByMAC[mac.String()]
	if len(names) == 0 {
		return nil
	}
	out := make([]registry.HostRecord, 0, len(names))
	for n := range names {
		out = append(out, s.hosts[n])
	}
	slices.SortFunc(out, func(a, b registry.HostRecord) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// indexHost adds (delta 1) or removes (-1) a host record in the MAC index
// and, as a known VTEP address, in the PublicIP table; s.mu must be held.
func (s *Store) indexHost(h registry.HostRecord, delta int) {
	if ip, err := netip.ParseAddr(h.PublicIP); err == nil {
		s.idx.add(netip.Prefix{}, ip, delta)
	}
	m, err := net.ParseMAC(h.VtepMAC)
	if err != nil {
		return
	}
	k := m.String()
	if delta > 0 {
		if s.hostsByMAC[k] == nil {
			s.hostsByMAC[k] = map[string]struct{}{}
		}
		s.hostsByMAC[k][h.Host] = struct{}{}
		return
	}
	delete(s.hostsByMAC[k], h.Host)
	if len(s.hostsByMAC[k]) == 0 {
		delete(s.hostsByMAC, k)
	}
}
