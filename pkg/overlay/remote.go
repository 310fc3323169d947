// Package overlay decides, from the snapshot, which subnets this host reaches
// through the VXLAN device and behind which VTEP: the desired state that the
// fdb and routes controllers converge. Everything here is a pure function of
// its arguments, so the decisions are table-tested without a kernel and do
// not depend on the order in which records and leases arrived.
package overlay

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Self is this host's identity, and the trust boundary its decisions obey.
type Self struct {
	Host     string
	PublicIP netip.Addr // see PublicIPOf
	// VtepMAC is this host's VXLAN device MAC: a remote record naming it is
	// refused.
	VtepMAC net.HardwareAddr
	// Trust, when set, applies the policy to every claim (trust.go); nil
	// decides on the claims alone (tests of the resolution rules).
	Trust *Trust
}

// Known says whether the identity is complete enough to tell remote from local.
func (s Self) Known() bool { return s.Host != "" && s.PublicIP.IsValid() }

// Source says who asked for a remote subnet; it decides the route's protocol.
type Source int

// Sources.
const (
	FromRecord Source = iota + 1 // a network record of a registrar: our protocol
	FromLease                    // a flanneld vxlan lease: flannel's exact values
)

func (s Source) String() string {
	switch s {
	case FromRecord:
		return "record"
	case FromLease:
		return "lease"
	}
	return fmt.Sprintf("source(%d)", int(s))
}

// Subnet is a remote subnet and the VTEP behind it.
type Subnet struct {
	Prefix   netip.Prefix
	PublicIP netip.Addr
	VtepMAC  net.HardwareAddr
	Source   Source
	Owner    string // the record's etcd key, or "lease <prefix>"
	Host     string // the record's host; "" for a lease
	Reserved bool   // a record whose host holds the subnet's reservation
	// Via, for a record, is the gateway shared by every record subnet behind
	// its VTEP (RecordVia); zero: the subnet's own network address.
	Via netip.Addr
}

// Gateway is the neighbour address the subnet is routed through: for a
// lease flannel's (the subnet's network address), for a record the shared
// gateway of its VTEP (Via) when known.
func (s Subnet) Gateway() netip.Addr {
	if s.Source == FromRecord && s.Via.IsValid() {
		return s.Via
	}
	return s.Prefix.Addr()
}

// MAC is the VTEP MAC in the key form of the fdb controller (lowercase).
func (s Subnet) MAC() string { return s.VtepMAC.String() }

// Conflict is a subnet claimed in ways that cannot all be honoured, or
// refused by the trust boundary; nothing is routed for it.
type Conflict struct {
	Prefix    netip.Prefix
	Rule      string // the policy rule (policy.Rule*); "" for a plain claim conflict
	Reason    string
	Claimants []string
}

func (c Conflict) String() string {
	if c.Rule != "" {
		return fmt.Sprintf("%s: refused (%s): %s (%v)", c.Prefix, c.Rule, c.Reason, c.Claimants)
	}
	return fmt.Sprintf("%s: %s (%v)", c.Prefix, c.Reason, c.Claimants)
}

// Resolve decides how p is reached. records are the records claiming exactly
// p (any order); lease is p's flannel lease, if any. It returns the remote
// subnet, or ok false when p is not routed through the tunnel, and a
// conflict when claims disagree.
//
// Rules: a subnet claimed by this host (a record of ours, or a lease with our
// PublicIP) is local. Remote records win over a lease; among several remote
// records, the one of the host holding p's reservation wins, else they must
// agree on the VTEP. A remote, valid vxlan lease is used when no record claims p.
// With self.Trust, the result must also pass the trust boundary (trust.go).
func Resolve(self Self, p netip.Prefix, records []state.KeyedNetwork, lease *state.Lease) (Subnet, bool, *Conflict) {
	s, ok, c := resolve(self, p, records, lease)
	if self.Trust == nil || !ok {
		return s, ok, c
	}
	s, refused := self.Trust.check(self, s)
	if refused != nil {
		return Subnet{}, false, refused
	}
	return s, ok, c
}

func resolve(self Self, p netip.Prefix, records []state.KeyedNetwork, lease *state.Lease) (Subnet, bool, *Conflict) {
	recs := records
	if len(recs) > 1 { // one record per subnet is the rule: no copy to sort then
		recs = slices.Clone(records)
		slices.SortFunc(recs, func(a, b state.KeyedNetwork) int { return cmp.Compare(a.Key, b.Key) })
	}
	isMine := func(r state.KeyedNetwork) bool { return r.Host == self.Host || r.PublicIP == self.PublicIP }
	var remote, mine []state.KeyedNetwork
	if !slices.ContainsFunc(recs, func(r state.KeyedNetwork) bool { return r.Subnet != p || isMine(r) }) {
		remote = recs // the rule: every record on p is remote; read only below, no copy
	} else {
		for _, r := range recs {
			switch {
			case r.Subnet != p:
			case isMine(r):
				mine = append(mine, r)
			default:
				remote = append(remote, r)
			}
		}
	}
	ourLease := lease != nil && lease.IsVXLAN() && lease.PublicIP == self.PublicIP
	switch {
	case len(remote) > 0 && (len(mine) > 0 || ourLease):
		c := conflict(p, "claimed by this host and by remote records", remote)
		if ourLease {
			c.Claimants = append(c.Claimants, "lease of this host")
		}
		return Subnet{}, false, c
	case len(remote) > 0:
		return fromRecords(p, remote, lease)
	case lease != nil:
		s, ok := fromLease(self, *lease)
		return s, ok, nil
	}
	return Subnet{}, false, nil
}

func fromRecords(p netip.Prefix, remote []state.KeyedNetwork, lease *state.Lease) (Subnet, bool, *Conflict) {
	pick := remote[0]
	if lease != nil && lease.Reservation != nil {
		i := slices.IndexFunc(remote, func(r state.KeyedNetwork) bool { return r.Host == lease.Reservation.Host })
		if i < 0 {
			return Subnet{}, false, conflict(p, "reserved for host "+lease.Reservation.Host+", claimed by others", remote)
		}
		pick = remote[i]
	} else {
		for _, r := range remote[1:] {
			if r.PublicIP != pick.PublicIP || r.VtepMAC.String() != pick.VtepMAC.String() {
				return Subnet{}, false, conflict(p, "claimed by several hosts", remote)
			}
		}
	}
	return Subnet{Prefix: p, PublicIP: pick.PublicIP, VtepMAC: pick.VtepMAC, Source: FromRecord, Owner: pick.Key, Host: pick.Host,
		Reserved: lease != nil && lease.Reservation != nil && lease.Reservation.Host == pick.Host}, true, nil
}

func fromLease(self Self, l state.Lease) (Subnet, bool) {
	if !l.IsVXLAN() || l.PublicIP == self.PublicIP || len(l.VtepMAC) != 6 {
		return Subnet{}, false
	}
	if _, err := registry.ValidPublicIP(l.PublicIP.String()); err != nil {
		return Subnet{}, false
	}
	if _, err := flannel.ParseVtepMAC(l.VtepMAC.String()); err != nil {
		return Subnet{}, false
	}
	return Subnet{Prefix: l.Subnet, PublicIP: l.PublicIP, VtepMAC: l.VtepMAC, Source: FromLease, Owner: "lease " + l.Subnet.String()}, true
}

func conflict(p netip.Prefix, reason string, recs []state.KeyedNetwork) *Conflict {
	c := &Conflict{Prefix: p, Reason: reason}
	for _, r := range recs {
		c.Claimants = append(c.Claimants, fmt.Sprintf("%s (%s, %s)", r.Key, r.PublicIP, r.VtepMAC))
	}
	return c
}

// All resolves every subnet named by records or leases (any order) and
// returns the remote ones by prefix (records with their VTEP's shared
// gateway, RecordVia) and the conflicts sorted by prefix.
func All(self Self, records []state.KeyedNetwork, leases []state.Lease) (map[netip.Prefix]Subnet, []Conflict) {
	bySubnet := map[netip.Prefix][]state.KeyedNetwork{}
	for _, r := range records {
		bySubnet[r.Subnet] = append(bySubnet[r.Subnet], r)
	}
	leaseOf := map[netip.Prefix]*state.Lease{}
	for i := range leases {
		leaseOf[leases[i].Subnet] = &leases[i]
		if _, ok := bySubnet[leases[i].Subnet]; !ok {
			bySubnet[leases[i].Subnet] = nil
		}
	}
	out := map[netip.Prefix]Subnet{}
	var conflicts []Conflict
	for p, recs := range bySubnet {
		s, ok, c := Resolve(self, p, recs, leaseOf[p])
		if ok {
			out[p] = s
		}
		if c != nil {
			conflicts = append(conflicts, *c)
		}
	}
	slices.SortFunc(conflicts, func(a, b Conflict) int { return ComparePrefix(a.Prefix, b.Prefix) })
	via := map[string]netip.Addr{} // VTEP MAC -> RecordVia of its records
	for _, s := range out {
		if s.Source != FromRecord {
			continue
		}
		if v, ok := via[s.MAC()]; !ok || s.Prefix.Addr().Less(v) {
			via[s.MAC()] = s.Prefix.Addr()
		}
	}
	for p, s := range out {
		if s.Source == FromRecord {
			s.Via = via[s.MAC()]
			out[p] = s
		}
	}
	return out, conflicts
}

// ComparePrefix orders prefixes by address, then length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// LeaseIndex is the store's lookup of vxlan leases by VTEP.
type LeaseIndex interface {
	VXLANLeaseWithMAC(mac net.HardwareAddr) (state.Lease, bool)
	VXLANLeaseWithPublicIP(ip netip.Addr) (state.Lease, bool)
}

// SeesFlannel says whether the store holds a vxlan lease of this host (its
// VTEP MAC is the VXLAN device's, or its PublicIP is self's): proof that we
// read flanneld's registry (FLANNEL_PREFIX is right). Only then does the
// absence of a lease mean flanneld wants no route, neighbour or FDB entry,
// so only then may flannel-shaped objects no lease wants be swept.
func SeesFlannel(idx LeaseIndex, self Self, vtepMAC net.HardwareAddr) bool {
	if _, ok := idx.VXLANLeaseWithMAC(vtepMAC); ok {
		return true
	}
	_, ok := idx.VXLANLeaseWithPublicIP(self.PublicIP)
	return ok
}

// IsSelfLease says whether l is a vxlan lease of this host (see SeesFlannel).
func IsSelfLease(l state.Lease, self Self, vtepMAC net.HardwareAddr) bool {
	return l.IsVXLAN() && ((len(vtepMAC) > 0 && l.VtepMAC.String() == vtepMAC.String()) ||
		(self.PublicIP.IsValid() && l.PublicIP == self.PublicIP))
}
