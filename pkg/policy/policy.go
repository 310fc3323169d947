// Package policy is the trust boundary: what another host publishes in etcd
// is input, not truth, and this package decides whether a subnet may be
// programmed into this host's kernel or published from a local Docker
// network. One set of rules serves both directions:
//
//   - never the reserved ranges (0/8, 127/8, 169.254/16, 224/4, 240/4,
//     255.255.255.255);
//   - no wider than the minimum prefix length (MIN_PREFIX_LEN);
//   - inside the allowed ranges (ALLOWED_SUBNETS; by default flannel's
//     Network and the private ranges Docker's address pools use);
//   - never over this host's underlay: its own addresses and connected
//     routes outside flannel and Docker, the HOST_GATEWAY_MAP destinations
//     (peers behind a gateway), its default gateways, the etcd endpoints
//     and the next hops to them, and any known VTEP PublicIP (routing one
//     of those into the tunnel cuts the host off).
//
// Everything here is a pure function of its arguments.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Rules, as they appear in refusals and logs.
const (
	RuleReserved   = "reserved-range"
	RulePrefixLen  = "prefix-too-short"
	RuleNotAllowed = "not-allowed"
	RuleUnderlay   = "underlay"
	RulePublicIP   = "vtep-address"
	RuleVTEP       = "vtep-binding"
	RuleOverlap    = "overlap"
)

// DefaultMinBits is the default minimum prefix length: Docker's address
// pools hand out /16 and /20 networks, flannel /24 leases; a /8 record
// would swallow every subnet of a cluster.
const DefaultMinBits = 12

// Reserved are never programmed nor published, whatever the settings say.
var Reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// Private are the private ranges allowed by default (RFC 1918): Docker's
// default address pools (172.17.0.0/16 …, 192.168.0.0/16 in /20s) and the
// 10/8 pools users configure for it and flannel.
var Private = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

// Policy is the configured part of the rules.
type Policy struct {
	// Allowed are the ranges a subnet must lie in; nil: Private plus
	// flannel's Network (Facts.FlannelNetwork) when known.
	Allowed []netip.Prefix
	// MinBits is the shortest prefix length accepted; 0: DefaultMinBits.
	MinBits int
}

// Underlay is what this host needs to reach its peers and etcd.
type Underlay struct {
	// Addrs are this host's own addresses outside flannel's and Docker's
	// devices, with their prefix length (198.51.100.1/24).
	Addrs []netip.Prefix
	// Routes are the connected routes outside flannel and Docker.
	Routes []netip.Prefix
	// Gateways are the default routes' next hops.
	Gateways []netip.Addr
	// Etcd are the etcd endpoints' addresses and the next hops to them.
	Etcd []netip.Addr
	// Peers are the HOST_GATEWAY_MAP destinations: the underlay of peers
	// behind a gateway, as vital as a connected route.
	Peers []netip.Prefix
}

// Facts is what the rules are checked against.
type Facts struct {
	FlannelNetwork netip.Prefix // from <FLANNEL_PREFIX>/config; zero when unknown
	Underlay       Underlay
	// PublicIPIn returns a VTEP address of a known host (host records,
	// flannel leases, network records) inside the subnet, if any. May be nil.
	PublicIPIn func(netip.Prefix) (netip.Addr, bool)
}

// Refusal says why a subnet (or a VTEP) is not used.
type Refusal struct {
	Subnet netip.Prefix
	Rule   string
	Detail string // the colliding thing, in words
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("%s refused (%s): %s", r.Subnet, r.Rule, r.Detail)
}

func refuse(s netip.Prefix, rule, format string, args ...any) *Refusal {
	return &Refusal{Subnet: s, Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

// AllowedRanges returns the ranges subnets must lie in.
func (p Policy) AllowedRanges(f Facts) []netip.Prefix {
	if p.Allowed != nil {
		return p.Allowed
	}
	out := slices.Clone(Private)
	if f.FlannelNetwork.IsValid() {
		out = append(out, f.FlannelNetwork.Masked())
	}
	return out
}

// Check decides whether subnet s may be programmed or published; nil means
// yes.
func (p Policy) Check(s netip.Prefix, f Facts) *Refusal {
	if !s.IsValid() || !s.Addr().Is4() {
		return refuse(s, RuleNotAllowed, "not an IPv4 subnet")
	}
	s = s.Masked()
	for _, r := range Reserved {
		if s.Overlaps(r) {
			return refuse(s, RuleReserved, "overlaps the reserved range %s", r)
		}
	}
	minBits := p.MinBits
	if minBits <= 0 {
		minBits = DefaultMinBits
	}
	if s.Bits() < minBits {
		return refuse(s, RulePrefixLen, "/%d is wider than the minimum prefix length /%d (MIN_PREFIX_LEN)", s.Bits(), minBits)
	}
	allowed := p.AllowedRanges(f)
	if !slices.ContainsFunc(allowed, func(a netip.Prefix) bool { return covers(a, s) }) {
		return refuse(s, RuleNotAllowed, "outside the allowed ranges %s (ALLOWED_SUBNETS)", join(allowed))
	}
	return underlay(s, f)
}

// underlay refuses a subnet that would take this host's path to its peers
// or to etcd into the tunnel.
func underlay(s netip.Prefix, f Facts) *Refusal {
	u := f.Underlay
	for _, a := range u.Addrs {
		if s.Contains(a.Addr()) {
			return refuse(s, RuleUnderlay, "contains this host's address %s", a.Addr())
		}
		if s.Overlaps(a.Masked()) {
			return refuse(s, RuleUnderlay, "overlaps this host's network %s", a.Masked())
		}
	}
	for _, r := range u.Routes {
		if s.Overlaps(r) {
			return refuse(s, RuleUnderlay, "overlaps the connected route %s", r)
		}
	}
	for _, p := range u.Peers {
		if s.Overlaps(p) {
			return refuse(s, RuleUnderlay, "overlaps %s, the path to peers through a gateway (HOST_GATEWAY_MAP)", p)
		}
	}
	for _, g := range u.Gateways {
		if s.Contains(g) {
			return refuse(s, RuleUnderlay, "contains the default gateway %s", g)
		}
	}
	for _, e := range u.Etcd {
		if s.Contains(e) {
			return refuse(s, RuleUnderlay, "contains %s, on the path to etcd", e)
		}
	}
	if f.PublicIPIn != nil {
		if ip, ok := f.PublicIPIn(s); ok {
			return refuse(s, RulePublicIP, "contains the VTEP address %s of a host", ip)
		}
	}
	return nil
}

// CheckPublicIP decides whether ip may be a remote VTEP's underlay address:
// a unicast address outside the reserved ranges and not this host's own.
func CheckPublicIP(s netip.Prefix, ip, own netip.Addr) *Refusal {
	switch {
	case !ip.IsValid() || !ip.Is4():
		return refuse(s, RuleVTEP, "PublicIP %s is not an IPv4 address", ip)
	case ip == own:
		return refuse(s, RuleVTEP, "PublicIP %s is this host's own", ip)
	case ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.IsUnspecified():
		return refuse(s, RuleVTEP, "PublicIP %s is not a unicast underlay address", ip)
	}
	for _, r := range Reserved {
		if r.Contains(ip) {
			return refuse(s, RuleVTEP, "PublicIP %s is in the reserved range %s", ip, r)
		}
	}
	return nil
}

// covers says whether a contains all of s.
func covers(a, s netip.Prefix) bool {
	return a.Bits() <= s.Bits() && a.Contains(s.Addr())
}

func join(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}
