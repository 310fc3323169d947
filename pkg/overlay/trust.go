package overlay

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Claims is what the trust boundary looks up beyond the claims on one
// subnet (*state.Store satisfies it).
type Claims interface {
	NetworksBySubnet(p netip.Prefix) []state.KeyedNetwork
	Lease(p netip.Prefix) (state.Lease, bool)
	Overlapping(p netip.Prefix) []netip.Prefix
	VXLANLeaseWithMAC(mac net.HardwareAddr) (state.Lease, bool)
	Host(host string) (registry.HostRecord, bool)
	HostsWithMAC(mac net.HardwareAddr) []registry.HostRecord
}

// Trust is the trust boundary of the data plane: a remote subnet is routed
// only when it passes the policy (pkg/policy), names a VTEP that is really
// its host's, and wins against every claim that overlaps it.
type Trust struct {
	Policy policy.Policy
	Facts  policy.Facts
	Claims Claims
}

// Strength of a claim when two overlap: the stronger is routed, the weaker
// refused; equals are both refused.
const (
	weakRecord     = 1 // a record without its reservation
	reservedRecord = 2 // a record whose host holds the reservation
	flannelLease   = 3 // a live flanneld lease beats any record
	ownClaim       = 4 // this host's own subnets and networks are protected
)

// check applies the boundary to a resolved subnet; it returns the subnet to
// program (the lease's PublicIP wins for a record's VTEP, see binding) or a
// refusal.
func (t *Trust) check(self Self, s Subnet) (Subnet, *Conflict) {
	if r := t.Policy.Check(s.Prefix, t.Facts); r != nil {
		return s, refusal(s, r.Rule, r.Detail)
	}
	if len(self.VtepMAC) == 6 && s.MAC() == self.VtepMAC.String() {
		return s, refusal(s, policy.RuleVTEP, "names this host's own VTEP MAC "+s.MAC())
	}
	if s.Source == FromRecord {
		var c *Conflict
		if s, c = t.binding(s); c != nil {
			return s, c
		}
	}
	if r := policy.CheckPublicIP(s.Prefix, s.PublicIP, self.PublicIP); r != nil {
		return s, refusal(s, r.Rule, r.Detail)
	}
	mine := strength(s)
	for _, q := range t.Claims.Overlapping(s.Prefix) {
		if st, who := t.strongest(self, q); st >= mine {
			return s, refusal(s, policy.RuleOverlap, "overlaps "+who)
		}
	}
	return s, nil
}

// binding keeps one MAC to one PublicIP: flanneld's lease for a VTEP MAC is
// the authority, else the host record naming the MAC. A record of that VTEP's own host (its host record names the
// MAC) that disagrees is flanneld run with --public-ip behind NAT: the
// lease's address wins for the FDB. Anyone else naming the MAC is refused.
func (t *Trust) binding(s Subnet) (Subnet, *Conflict) {
	l, ok := t.Claims.VXLANLeaseWithMAC(s.VtepMAC)
	if !ok {
		// No flanneld lease names the MAC: a registrar's host record is the
		// authority; another host's naming it refuses the record.
		for _, hr := range t.Claims.HostsWithMAC(s.VtepMAC) {
			if hr.Host != s.Host {
				return s, refusal(s, policy.RuleVTEP, fmt.Sprintf("VTEP MAC %s belongs to host %s at %s", s.MAC(), hr.Host, hr.PublicIP))
			}
		}
		return s, nil
	}
	if l.PublicIP == s.PublicIP {
		return s, nil
	}
	if hr, ok := t.Claims.Host(s.Host); ok && sameMAC(hr.VtepMAC, s.VtepMAC) {
		s.PublicIP = l.PublicIP
		return s, nil
	}
	return s, refusal(s, policy.RuleVTEP, fmt.Sprintf("VTEP MAC %s belongs to flannel lease %s at %s, not %s",
		s.MAC(), l.Subnet, l.PublicIP, s.PublicIP))
}

func sameMAC(a string, b net.HardwareAddr) bool {
	m, err := net.ParseMAC(a)
	return err == nil && m.String() == b.String()
}

func strength(s Subnet) int {
	switch {
	case s.Source == FromLease:
		return flannelLease
	case s.Reserved:
		return reservedRecord
	}
	return weakRecord
}

// strongest returns the strength of the best claim on q that would be
// honoured on its own (a claim the policy refuses cannot knock out others:
// a hostile /1 must not withdraw every subnet it covers), and who holds it.
func (t *Trust) strongest(self Self, q netip.Prefix) (int, string) {
	best, who := 0, ""
	lease, hasLease := t.Claims.Lease(q)
	if hasLease && lease.IsVXLAN() {
		switch {
		case IsSelfLease(lease, self, self.VtepMAC):
			return ownClaim, "this host's flannel subnet " + q.String()
		case t.Policy.Check(q, t.Facts) == nil:
			best, who = flannelLease, fmt.Sprintf("flannel lease %s (%s)", q, lease.PublicIP)
		}
	}
	for _, r := range t.Claims.NetworksBySubnet(q) {
		if r.Host == self.Host || r.PublicIP == self.PublicIP {
			return ownClaim, fmt.Sprintf("this host's network %s (%s)", r.Network.Network, q)
		}
		if t.Policy.Check(q, t.Facts) != nil {
			continue
		}
		st := weakRecord
		if hasLease && lease.Reservation != nil && lease.Reservation.Host == r.Host {
			st = reservedRecord
		}
		if st > best {
			best, who = st, fmt.Sprintf("record %s (%s)", r.Key, q)
		}
	}
	if hasLease && best == 0 && lease.Reservation != nil && lease.Reservation.Host == self.Host {
		return ownClaim, "this host's reservation " + q.String()
	}
	return best, who
}

func refusal(s Subnet, rule, detail string) *Conflict {
	return &Conflict{Prefix: s.Prefix, Rule: rule, Reason: detail,
		Claimants: []string{fmt.Sprintf("%s (%s, %s)", s.Owner, s.PublicIP, s.VtepMAC)}}
}

// PublicIPOf is this host's VTEP address: FLANNELD_PUBLIC_IP when set;
// else the PublicIP of flanneld's own lease, recognised by the device's MAC
// (flanneld run with --public-ip behind NAT publishes that one, and peers
// must send to it); else the device's local address.
func PublicIPOf(override netip.Addr, link state.Link, idx LeaseIndex) netip.Addr {
	if override.IsValid() {
		return override
	}
	if len(link.MAC) == 6 && idx != nil {
		if l, ok := idx.VXLANLeaseWithMAC(link.MAC); ok && l.PublicIP.IsValid() && !l.PublicIP.IsUnspecified() {
			return l.PublicIP
		}
	}
	return link.Local
}

// Snapshot is what SelfOf reads (*state.Store satisfies it).
type Snapshot interface {
	Claims
	LeaseIndex
	Link() state.Link
	Facts() policy.Facts
}

// SelfOf is this host's identity as the controllers decide with it: its
// PublicIP (PublicIPOf), its VTEP MAC, and the trust boundary when a policy
// is set.
func SelfOf(host string, publicIP netip.Addr, p *policy.Policy, s Snapshot) Self {
	link := s.Link()
	self := Self{Host: host, PublicIP: PublicIPOf(publicIP, link, s), VtepMAC: link.MAC}
	if p != nil {
		self.Trust = &Trust{Policy: *p, Facts: s.Facts(), Claims: s}
	}
	return self
}
