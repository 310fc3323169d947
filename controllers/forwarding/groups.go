package forwarding

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"

	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Isolation groups (issue 10, README "Isolation groups"): a local network
// with groups accepts traffic arriving on the VXLAN device only from the
// networks of its groups, and replies to its own connections. One ipset
// (hash:net) per group holds the group's networks of the whole cluster, so
// the rules grow with this host's networks, never with pairs of networks.
//
// FilterChain, in order:
//
//	-i vx -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   (when a local network is grouped)
//	-d N -i vx -m set --match-set FR-G-g src -j ACCEPT           (each group g of each grouped N)
//	-d N -i vx -j DROP                                           (each grouped N; its counter is the drops)
//	-d M -i vx -j ACCEPT                                         (each ungrouped M, as before)
//	-s N -o vx -j ACCEPT                                         (every N, as before)
//
// Only the ACCEPTs before the DROPs are ordered: a new one is inserted first,
// a new DROP appended, so a converged chain is never reordered.

// SetPrefix starts the name of every ipset of ours; sets with other names
// are never touched.
const SetPrefix = "FR-G-"

// maxSetName is ipset's limit (IPSET_MAXNAMELEN 32, with the final NUL).
const maxSetName = 31

// SetName is the ipset of group g: SetPrefix+g, or, when that is longer
// than ipset allows, SetPrefix, the first 17 characters of g, '~' and 8 hex
// digits of g's SHA-256. '~' is not allowed in group names, so a hashed name
// never equals a plain one.
func SetName(g string) string {
	if len(SetPrefix)+len(g) <= maxSetName {
		return SetPrefix + g
	}
	sum := sha256.Sum256([]byte(g))
	keep := maxSetName - len(SetPrefix) - 1 - 8
	return SetPrefix + g[:keep] + "~" + hex.EncodeToString(sum[:4])
}

// Rule is one rule of FilterChain with its place.
type Rule struct {
	Spec []string
	// Early marks the ACCEPTs that must come before every Drop (inserted at
	// the top when missing); Drop marks a grouped network's DROP (appended).
	Early, Drop bool
}

// Snapshot is what the forwarding state is derived from.
type Snapshot struct {
	VXLAN   string
	Self    overlay.Self
	Local   []state.LocalNetwork // registered local networks
	Records []state.KeyedNetwork // network records of every host
	Leases  []state.Lease        // flannel's leases (its own subnets are ungrouped)
}

// Want is the desired forwarding state.
type Want struct {
	Filter []Rule
	NAT    [][]string
	// Sets are our ipsets by name, each with its members sorted.
	Sets map[string][]netip.Prefix
	// GroupOf names the group of each set.
	GroupOf map[string]string
}

// Derive computes the desired state from a snapshot, whatever the order of
// its slices. Set members are the grouped local networks and the remote
// subnets that are routed from a grouped record (overlay.All: records that
// lose a conflict, or this host's own, give no member); flannel leases are
// never members, so flannel's own subnets are ungrouped senders. Only the
// groups of local networks get a set: no other set is referenced.
func Derive(s Snapshot) Want {
	local := slices.Clone(s.Local)
	slices.SortFunc(local, func(a, b state.LocalNetwork) int { return overlay.ComparePrefix(a.Subnet, b.Subnet) })
	w := Want{Sets: map[string][]netip.Prefix{}, GroupOf: map[string]string{}}
	members := map[string]map[netip.Prefix]bool{}
	for _, n := range local {
		for _, g := range n.Groups {
			if members[g] == nil {
				members[g] = map[netip.Prefix]bool{}
			}
			members[g][n.Subnet] = true
		}
	}
	if len(members) > 0 {
		byKey := make(map[string]state.KeyedNetwork, len(s.Records))
		for _, r := range s.Records {
			byKey[r.Key] = r
		}
		remote, _ := overlay.All(s.Self, s.Records, s.Leases)
		for p, sub := range remote {
			if sub.Source != overlay.FromRecord {
				continue
			}
			for _, g := range byKey[sub.Owner].Groups {
				if m := members[g]; m != nil {
					m[p] = true
				}
			}
		}
		w.Filter = append(w.Filter, Rule{Spec: []string{"-i", s.VXLAN, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}, Early: true})
	}
	for g, m := range members {
		name := SetName(g)
		w.GroupOf[name] = g
		ps := make([]netip.Prefix, 0, len(m))
		for p := range m {
			ps = append(ps, p)
		}
		slices.SortFunc(ps, overlay.ComparePrefix)
		w.Sets[name] = ps
	}
	var drops, accepts []Rule
	for _, n := range local {
		d := n.Subnet.String()
		if len(n.Groups) == 0 {
			accepts = append(accepts, Rule{Spec: []string{"-d", d, "-i", s.VXLAN, "-j", "ACCEPT"}})
		} else {
			for _, g := range n.Groups {
				w.Filter = append(w.Filter, Rule{Spec: []string{"-d", d, "-i", s.VXLAN, "-m", "set", "--match-set", SetName(g), "src", "-j", "ACCEPT"}, Early: true})
			}
			drops = append(drops, Rule{Spec: []string{"-d", d, "-i", s.VXLAN, "-j", "DROP"}, Drop: true})
		}
		accepts = append(accepts, Rule{Spec: []string{"-s", d, "-o", s.VXLAN, "-j", "ACCEPT"}})
		w.NAT = append(w.NAT, []string{"-s", d, "-o", s.VXLAN, "-j", "ACCEPT"})
	}
	w.Filter = append(append(w.Filter, drops...), accepts...)
	return w
}
