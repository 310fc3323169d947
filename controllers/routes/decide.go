package routes

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Input is everything the desired state of one destination depends on.
type Input struct {
	Dst     netip.Prefix
	Self    overlay.Self
	Link    state.Link           // the VXLAN device
	Records []state.KeyedNetwork // records claiming exactly Dst
	Lease   *state.Lease         // Dst's flannel lease
	Locals  []state.LocalNetwork // local Docker networks overlapping Dst
	Gateway *config.GatewayRoute // HOST_GATEWAY_MAP entry for Dst
	Extra   *config.ExtraRoute   // FLANNEL_ROUTES_EXTRA entry for Dst
	// Links resolves device names (Extra.Dev, local bridges) to indexes;
	// a missing name has no entry.
	Links map[string]int
	// SeesFlannel: the store holds a vxlan lease of this host, so it sees
	// flanneld's registry (overlay.SeesFlannel).
	SeesFlannel bool
	// Via is the gateway shared by the record subnets behind Dst's VTEP
	// (overlay.RecordVia); zero: Dst's own network address.
	Via netip.Addr
	// Resolved, when set, is overlay.Resolve's answer for Dst from these
	// Self, Records and Lease: the controller resolves once per reconcile
	// (for Via) and Decide need not resolve again.
	Resolved *Resolved
}

// Resolved is the answer of overlay.Resolve.
type Resolved struct {
	Subnet   overlay.Subnet
	OK       bool
	Conflict *overlay.Conflict
}

// resolve is overlay.Resolve for in.Dst, or in.Resolved.
func (in Input) resolve() (overlay.Subnet, bool, *overlay.Conflict) {
	if in.Resolved != nil {
		return in.Resolved.Subnet, in.Resolved.OK, in.Resolved.Conflict
	}
	return overlay.Resolve(in.Self, in.Dst, in.Records, in.Lease)
}

// Decision is the desired state of one destination.
type Decision struct {
	Dst  netip.Prefix
	Want *netlink.Route // the route Dst must have; nil: none of ours
	// KeepFlannel: a remote flannel lease for Dst is alive, so a
	// flannel-shaped route may stay even though we want none.
	KeepFlannel bool
	// SweepFlannel: flannel-shaped routes no lease wants may be deleted.
	// False while the store shows no lease of this host: then a wrong
	// FLANNEL_PREFIX, not flanneld, may be why no lease wants them.
	SweepFlannel bool
	// Local: Dst overlaps a local network, so no tunnel route of ours may
	// exist.
	Local bool
	// LocalExact: a local network's subnet is exactly Dst, so flanneld's
	// route there is deleted too (it holds the bridge route's key). A local
	// network that only contains Dst (10.0.0.0/8 around a flannel /24)
	// leaves flanneld's more specific route alone.
	LocalExact bool
	// Claimed: a lease or record claims Dst (with Local: a conflict).
	Claimed bool
	// Restore holds the connected routes of local networks whose subnet is
	// exactly Dst, put back when missing after a claim or a tunnel route.
	Restore  []netlink.Route
	Conflict *Conflict
	// VTEPMAC is the VTEP of a record's tunnel route (Want): a route of
	// ours moves to a new shared gateway only once that gateway's
	// neighbour names this MAC (routes.Controller.gatewayReady).
	VTEPMAC net.HardwareAddr
	// Skip: the tunnel's state is unknown (no device or identity yet) and
	// nothing is configured for Dst: touch nothing.
	Skip bool
}

// Decide computes the desired state of in.Dst. Configured routes
// (FLANNEL_ROUTES_EXTRA, then HOST_GATEWAY_MAP) take precedence over tunnel
// routes; a subnet overlapping a local network is never routed into the tunnel.
func Decide(in Input) (Decision, error) {
	d := Decision{Dst: in.Dst, SweepFlannel: in.SeesFlannel}
	switch {
	case in.Extra != nil:
		r := &netlink.Route{Dst: netlinkx.IPNet(in.Dst), Gw: in.Extra.Gateway.AsSlice(), Protocol: netlinkx.RouteProtocol}
		if in.Extra.Dev != "" {
			idx, ok := in.Links[in.Extra.Dev]
			if !ok {
				return d, fmt.Errorf("device %s of FLANNEL_ROUTES_EXTRA entry %s not found", in.Extra.Dev, in.Extra)
			}
			r.LinkIndex = idx
		}
		d.Want = r
	case in.Gateway != nil:
		d.Want = &netlink.Route{Dst: netlinkx.IPNet(in.Dst), Gw: in.Gateway.Gateway.AsSlice(), Protocol: netlinkx.RouteProtocol}
	}
	if !in.Link.Present || in.Link.Index <= 0 || !in.Self.Known() {
		d.Skip = d.Want == nil
		return d, nil
	}
	s, ok, c := in.resolve()
	vxlanLease := in.Lease != nil && in.Lease.IsVXLAN()
	d.Claimed = ok || c != nil || vxlanLease
	remoteLease := vxlanLease && in.Lease.PublicIP != in.Self.PublicIP
	if len(in.Locals) > 0 {
		d.Local = true
		d.LocalExact = slices.ContainsFunc(in.Locals, func(l state.LocalNetwork) bool { return l.Subnet == in.Dst })
		d.KeepFlannel = remoteLease && !d.LocalExact
		switch {
		case c != nil && c.Rule != "":
			// Refused by the trust boundary: that is the reason to report.
			d.Conflict = &Conflict{Prefix: c.Prefix, Rule: c.Rule, Reason: c.Reason, Claimants: c.Claimants}
		case d.Claimed:
			d.Conflict = localConflict(in, s, ok, c)
		}
		if d.Want == nil {
			d.Restore = connected(in)
		}
		return d, nil
	}
	if c != nil {
		d.Conflict = &Conflict{Prefix: c.Prefix, Rule: c.Rule, Reason: c.Reason, Claimants: c.Claimants}
	}
	if d.Want == nil && ok {
		if s.Source == overlay.FromRecord {
			s.Via = in.Via
			d.VTEPMAC = s.VtepMAC
		}
		d.Want = TunnelRoute(s, in.Link.Index)
	}
	d.KeepFlannel = d.Want == nil && remoteLease
	return d, nil
}

// TunnelRoute is the route of a remote subnet, in the main table. A lease's
// is flannel's exact route, <subnet> via <subnet address> dev <vxlan>
// onlink, with flannel's protocol (flanneld rewrites it on every lease
// event: another shape would flap). A record's is ours, with our protocol,
// via the gateway its VTEP's record subnets share (overlay.RecordVia):
// <subnet> via <VTEP gateway> dev <vxlan> onlink.
func TunnelRoute(s overlay.Subnet, vxlanIndex int) *netlink.Route {
	proto := netlinkx.RouteProtocol
	if s.Source == overlay.FromLease {
		proto = netlinkx.FlannelRouteProtocol
	}
	return &netlink.Route{
		LinkIndex: vxlanIndex,
		Scope:     netlink.SCOPE_UNIVERSE,
		Dst:       netlinkx.IPNet(s.Prefix),
		Gw:        s.Gateway().AsSlice(),
		Flags:     unix.RTNH_F_ONLINK,
		Protocol:  proto,
	}
}

func connected(in Input) []netlink.Route {
	var out []netlink.Route
	for _, l := range in.Locals {
		idx, ok := in.Links[l.Bridge]
		if l.Subnet != in.Dst || l.Bridge == "" || !ok {
			continue
		}
		r := netlink.Route{LinkIndex: idx, Dst: netlinkx.IPNet(l.Subnet), Scope: netlink.SCOPE_LINK, Protocol: netlinkx.KernelRouteProtocol}
		if l.Gateway.IsValid() {
			r.Src = l.Gateway.AsSlice()
		}
		out = append(out, r)
	}
	return out
}

func localConflict(in Input, s overlay.Subnet, ok bool, c *overlay.Conflict) *Conflict {
	out := &Conflict{Prefix: in.Dst}
	var names []string
	for _, l := range in.Locals {
		names = append(names, fmt.Sprintf("%s (%s on %s)", l.Name, l.Subnet, l.Bridge))
		out.Local = append(out.Local, l.Name)
	}
	out.Reason = "overlaps local network " + strings.Join(names, ", ") + ": not routed into the tunnel"
	switch {
	case ok:
		out.Claimants = []string{fmt.Sprintf("%s (%s, %s)", s.Owner, s.PublicIP, s.VtepMAC)}
	case c != nil:
		out.Claimants = c.Claimants
	}
	if in.Lease != nil && in.Lease.IsVXLAN() && (!ok || s.Source != overlay.FromLease) {
		out.Claimants = append(out.Claimants, fmt.Sprintf("lease %s (%s, %s)", in.Lease.Subnet, in.Lease.PublicIP, in.Lease.VtepMAC))
	}
	return out
}

// Step is one kernel change of a plan: a replace, or with Del a delete,
// as the batch that writes it takes it.
type Step = netlinkx.RouteWrite

// Plan compares the desired state with the main table's routes to d.Dst and
// returns the changes in order, and a conflict when a foreign route holds
// the place of the wanted one. A flannel-shaped route is deleted for a local
// network's sake, or, with d.SweepFlannel, when no lease wants it. Adds come first and use replace, so a route
// that takes the place of another (ours over flannel's, a bridge's connected
// route over a tunnel route) does so atomically; deletes follow. Only our
// routes and flannel-shaped routes on the VXLAN device are ever deleted or
// replaced.
func Plan(d Decision, actual []netlink.Route, vxlanIndex int) ([]Step, *Conflict) {
	if d.Skip {
		return nil, nil
	}
	doomed := func(r netlink.Route) bool {
		if d.Want != nil && matches(r, *d.Want) {
			return false
		}
		return r.Protocol == netlinkx.RouteProtocol ||
			flannelShaped(r, vxlanIndex) && (d.LocalExact || (!d.KeepFlannel && d.SweepFlannel))
	}
	var adds, dels []netlink.Route
	var conflict *Conflict
	if d.Want != nil && !slices.ContainsFunc(actual, func(r netlink.Route) bool { return matches(r, *d.Want) }) {
		if occ := foreignHolder(actual, *d.Want, vxlanIndex); occ != nil {
			conflict = &Conflict{Prefix: d.Dst, Reason: "held by a foreign route: " + netlinkx.FormatRoute(*occ, ""),
				Claimants: []string{netlinkx.FormatRoute(*d.Want, "")}}
		} else {
			adds = append(adds, *d.Want)
		}
	}
	tunnelDeleted := false
	for _, r := range actual {
		if doomed(r) {
			dels = append(dels, r)
			tunnelDeleted = tunnelDeleted || r.LinkIndex == vxlanIndex
		}
	}
	if d.Local && (d.Claimed || tunnelDeleted) {
		for _, w := range d.Restore {
			present := slices.ContainsFunc(actual, func(r netlink.Route) bool { return r.LinkIndex == w.LinkIndex && !doomed(r) })
			held := slices.ContainsFunc(actual, func(r netlink.Route) bool { return sameKey(r, w) && !doomed(r) })
			if present || held {
				continue // in place, or a foreign route holds the key: never replace it
			}
			adds = append(adds, w)
		}
	}
	steps := make([]Step, 0, len(adds)+len(dels))
	for _, a := range adds {
		steps = append(steps, Step{Route: a})
	}
	for _, r := range dels {
		if !slices.ContainsFunc(adds, func(a netlink.Route) bool { return sameKey(r, a) }) {
			steps = append(steps, Step{Del: true, Route: r})
		}
	}
	return steps, conflict
}

// matches says whether the kernel route r is the wanted route w.
func matches(r, w netlink.Route) bool {
	return sameKey(r, w) && r.Protocol == w.Protocol && r.Type == unix.RTN_UNICAST &&
		(w.LinkIndex == 0 || r.LinkIndex == w.LinkIndex) && r.Gw.Equal(w.Gw) &&
		r.Flags&unix.RTNH_F_ONLINK == w.Flags&unix.RTNH_F_ONLINK &&
		r.Scope == w.Scope && r.Src.Equal(w.Src) && len(r.MultiPath) == 0
}

// sameKey says whether r and w share the kernel's route key in the main
// table (destination, TOS, metric): replacing w overwrites r.
func sameKey(r, w netlink.Route) bool {
	return netlinkx.Prefix(r.Dst) == netlinkx.Prefix(w.Dst) && r.Tos == w.Tos && r.Priority == w.Priority &&
		(r.Table == 0 || r.Table == unix.RT_TABLE_MAIN)
}

// foreignHolder returns a route holding w's key that must not be
// overwritten, if any (the kernel allows several with `ip route append`).
func foreignHolder(rs []netlink.Route, w netlink.Route, vxlanIndex int) *netlink.Route {
	for i := range rs {
		if sameKey(rs[i], w) && !replaceable(rs[i], vxlanIndex) {
			return &rs[i]
		}
	}
	return nil
}

// replaceable says whether a route holding the wanted route's key may be
// overwritten: ours, or flannel's (its protocol on the VXLAN device).
func replaceable(r netlink.Route, vxlanIndex int) bool {
	return r.Protocol == netlinkx.RouteProtocol ||
		(r.LinkIndex == vxlanIndex && r.Protocol == netlinkx.FlannelRouteProtocol)
}

// flannelShaped says whether r looks like a route flanneld installs: on the
// VXLAN device, flannel's protocol, via the destination's own network
// address, onlink.
func flannelShaped(r netlink.Route, vxlanIndex int) bool {
	dst := netlinkx.Prefix(r.Dst)
	return r.LinkIndex == vxlanIndex && vxlanIndex > 0 && r.Protocol == netlinkx.FlannelRouteProtocol &&
		r.Flags&unix.RTNH_F_ONLINK != 0 && dst.IsValid() && netlinkx.Addr(r.Gw) == dst.Addr()
}
