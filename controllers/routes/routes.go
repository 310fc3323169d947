// Package routes is the controller of the main table's routes this host
// needs: per remote subnet, flannel's onlink route via the VXLAN device
// (ours for network records; flannel's exact values to repair a flanneld
// lease's route), and the configured HOST_GATEWAY_MAP and
// FLANNEL_ROUTES_EXTRA routes.
//
// Keys: "<cidr>" for a remote subnet, "gw:<cidr>" and "extra:<cidr>" for the
// configured routes. A key names a destination; whatever its prefix, a
// reconcile converges everything of that destination, so a destination
// reached under several keys is never fought over. Routes we create carry
// netlinkx.RouteProtocol; only those, and flannel-shaped routes on the VXLAN
// device whose lease and record are gone, are ever deleted — the latter only
// while the store holds a vxlan lease of this host, proof that it sees
// flanneld's registry (else a wrong FLANNEL_PREFIX would sweep every route
// flanneld programmed). A subnet that
// overlaps a local Docker network is never routed into the tunnel: a tunnel
// route for it is deleted, the bridge's connected route restored, and the
// conflict reported.
package routes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name.
const Name = "routes"

// Key prefixes of configured routes.
const (
	GatewayPrefix = "gw:"
	ExtraPrefix   = "extra:"
)

// Options configure the controller.
type Options struct {
	Host     string     // this host's name (HOST_NAME)
	PublicIP netip.Addr // FLANNELD_PUBLIC_IP; zero: the VXLAN device's local address
	Gateways []config.GatewayRoute
	Extra    []config.ExtraRoute
	// Policy, when set, is the trust boundary every remote claim must pass
	// (pkg/policy); nothing is programmed until the underlay was observed.
	Policy *policy.Policy
	// SweepGrace overrides how long a flannel-shaped object no lease wants
	// must stay unwanted before it is deleted (0: reconcile.DefaultGrace; < 0: none).
	SweepGrace time.Duration
	// Hold, when set and active, defers deleting the routes of destinations
	// nothing wants any more (see reconcile.Hold): after etcd lost its data,
	// their owners re-register within seconds. A local network still takes
	// its subnet back at once.
	Hold *reconcile.Hold
	// OnConflict is called when a destination's conflict appears, changes or
	// (Active false) clears. It runs in the reconcile and must not block.
	OnConflict func(Conflict)
}

// Conflict is a destination not routed as its claimants ask.
type Conflict struct {
	Prefix    netip.Prefix
	Rule      string // the policy rule that refused it; "" for conflicting claims
	Reason    string
	Claimants []string
	Local     []string // local networks involved, by name
	Active    bool     // false when reported cleared
}

func (c Conflict) String() string {
	return fmt.Sprintf("%s: %s; claimed by %s", c.Prefix, c.Reason, strings.Join(c.Claimants, ", "))
}

func sameConflict(a, b Conflict) bool {
	return a.Prefix == b.Prefix && a.Rule == b.Rule && a.Reason == b.Reason && slices.Equal(a.Claimants, b.Claimants) && slices.Equal(a.Local, b.Local)
}

// Controller converges routes.
type Controller struct {
	h     *netlinkx.Handle
	store *state.Store
	opts  Options
	gw    map[netip.Prefix]config.GatewayRoute
	extra map[netip.Prefix]config.ExtraRoute

	mu        sync.Mutex // guards conflicts
	conflicts map[netip.Prefix]Conflict
	// settle delays deleting a flannel-shaped route no lease wants (see
	// reconcile.Settle): the lease may not have arrived yet.
	settle *reconcile.Settle
	// vteps memoises the per-VTEP resolution per store version.
	vteps overlay.VTEPCache
	// absent holds the destinations the start resync's dump found without
	// any main-table route: their first reconcile needs no lookup.
	absent reconcile.Absent[netip.Prefix]
}

// New returns the routes controller.
func New(h *netlinkx.Handle, store *state.Store, o Options) *Controller {
	c := &Controller{h: h, store: store, opts: o, gw: map[netip.Prefix]config.GatewayRoute{},
		extra: map[netip.Prefix]config.ExtraRoute{}, conflicts: map[netip.Prefix]Conflict{},
		settle: reconcile.NewSettle(o.SweepGrace)}
	for _, g := range o.Gateways {
		c.gw[g.Dst.Masked()] = g
	}
	for _, e := range o.Extra {
		c.extra[e.Dst.Masked()] = e
	}
	return c
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// Conflicts returns the active conflicts, sorted by destination.
func (c *Controller) Conflicts() []Conflict {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Conflict, 0, len(c.conflicts))
	for _, x := range c.conflicts {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b Conflict) int { return overlay.ComparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Refused returns, from the current snapshot, every remote claim the trust
// boundary refuses (overlay.Conflict.Rule set), sorted by subnet.
func (c *Controller) Refused() []overlay.Conflict {
	_, conflicts := overlay.All(c.self(c.store.Link()), c.store.Networks(), c.store.Leases())
	return slices.DeleteFunc(conflicts, func(x overlay.Conflict) bool { return x.Rule == "" })
}

// ParseKey returns the destination a key names.
func ParseKey(key string) (netip.Prefix, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(key, GatewayPrefix), ExtraPrefix)
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("routes key %q: not an IPv4 CIDR", key)
	}
	return p.Masked(), nil
}

func (c *Controller) self(state.Link) overlay.Self {
	return overlay.SelfOf(c.opts.Host, c.opts.PublicIP, c.opts.Policy, c.store)
}

// trusted says whether the trust boundary can be applied: without a policy
// there is none; with one, the underlay must have been observed.
func (c *Controller) trusted() bool {
	return c.opts.Policy == nil || c.store.Underlay().Observed
}

// Reconcile converges the destination key names.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	p, err := c.Plan(ctx, key)
	if err != nil || p == nil {
		return err
	}
	return c.Apply([]context.Context{ctx}, []reconcile.Plan{p})[0]
}

// gatewayWait is how soon a route waiting for its new gateway's neighbour
// is looked at again.
const gatewayWait = 50 * time.Millisecond

// gatewayReady says whether a record's route may be written: always when no
// tunnel route to the destination exists (nothing to break); when one
// exists via another gateway (the VTEP's shared gateway moved, or the
// per-subnet shape of an older version), only once the new gateway's
// neighbour is in place with the VTEP's MAC, so no packet meets a gateway
// without a neighbour.
func (c *Controller) gatewayReady(d Decision, actual []netlink.Route, vxlanIndex int) (bool, error) {
	if d.Want == nil || d.VTEPMAC == nil || slices.ContainsFunc(actual, func(r netlink.Route) bool { return matches(r, *d.Want) }) {
		return true, nil
	}
	moving := slices.ContainsFunc(actual, func(r netlink.Route) bool {
		return r.LinkIndex == vxlanIndex && sameKey(r, *d.Want) && !r.Gw.Equal(d.Want.Gw)
	})
	if !moving {
		return true, nil
	}
	n, err := c.h.Neigh(vxlanIndex, netlinkx.Addr(d.Want.Gw))
	if err != nil {
		return false, err
	}
	return n != nil && n.HardwareAddr.String() == d.VTEPMAC.String(), nil
}

// settleSweeps holds back deleting flanneld's routes that no lease wants
// until they have been unwanted for SweepGrace, and says how long to wait.
// A local network's exact subnet does not wait: its bridge route must be
// restored at once.
func (c *Controller) settleSweeps(dst netip.Prefix, d Decision, steps []Step) ([]Step, time.Duration) {
	key := dst.String()
	pending := func(s Step) bool { return s.Del && s.Route.Protocol != netlinkx.RouteProtocol && !d.LocalExact }
	if !slices.ContainsFunc(steps, pending) {
		c.settle.Clear(key)
		return steps, 0
	}
	if ok, wait := c.settle.Ready(key); !ok {
		return slices.DeleteFunc(steps, pending), wait
	}
	c.settle.Clear(key)
	return steps, 0
}

// held drops the deletions of a destination nothing wants any more while
// Options.Hold is active, and says when to look again.
func (c *Controller) held(d Decision, steps []Step, wait time.Duration) ([]Step, time.Duration) {
	left := c.opts.Hold.Remaining()
	if left <= 0 || d.Want != nil || d.Local || !slices.ContainsFunc(steps, func(s Step) bool { return s.Del }) {
		return steps, wait
	}
	if wait == 0 || left < wait {
		wait = left
	}
	return slices.DeleteFunc(steps, func(s Step) bool { return s.Del }), wait
}

func (c *Controller) input(dst netip.Prefix) (Input, error) {
	v := c.store.Version() // before the data: the shared gateway is at least this new
	link := c.store.Link()
	in := Input{Dst: dst, Link: link, Self: c.self(link), Records: c.store.NetworksBySubnet(dst),
		Locals: c.store.LocalOverlapping(dst)}
	if l, ok := c.store.Lease(dst); ok {
		in.Lease = &l
	}
	in.SeesFlannel = overlay.SeesFlannel(c.store, in.Self, link.MAC)
	res := overlay.Resolver{Self: in.Self, Index: c.store, Cache: &c.vteps, Version: v}
	s, ok, conflict := overlay.Resolve(in.Self, dst, in.Records, in.Lease) // what res.At(dst) resolves
	in.Resolved = &Resolved{Subnet: s, OK: ok, Conflict: conflict}
	if ok && s.Source == overlay.FromRecord {
		in.Via = overlay.RecordVia(res.VTEP(s.MAC()))
	}
	if g, ok := c.gw[dst]; ok {
		in.Gateway = &g
	}
	if e, ok := c.extra[dst]; ok {
		in.Extra = &e
	}
	var names []string
	if in.Extra != nil && in.Extra.Dev != "" {
		names = append(names, in.Extra.Dev)
	}
	for _, l := range in.Locals {
		if l.Subnet == dst && l.Bridge != "" {
			names = append(names, l.Bridge)
		}
	}
	for _, n := range names {
		l, err := c.h.LinkByName(n)
		switch {
		case netlinkx.IsNotFound(err):
		case err != nil:
			return in, err
		default:
			if in.Links == nil {
				in.Links = map[string]int{}
			}
			in.Links[n] = l.Attrs().Index
		}
	}
	return in, nil
}

func (c *Controller) report(dst netip.Prefix, x *Conflict) {
	c.mu.Lock()
	old, had := c.conflicts[dst]
	var note *Conflict
	switch {
	case x == nil && had:
		delete(c.conflicts, dst)
		old.Active = false
		note = &old
	case x != nil && (!had || !sameConflict(old, *x)):
		n := *x
		n.Active = true
		c.conflicts[dst] = n
		note = &n
	}
	c.mu.Unlock()
	if note != nil && c.opts.OnConflict != nil {
		c.opts.OnConflict(*note)
	}
}

// Keys returns every wanted destination (remote subnets, configured routes,
// conflicting subnets, local networks' subnets) and every owned one: routes
// with our protocol in the main table and flannel-shaped routes on the VXLAN
// device.
//
// Listed for the start resync (reconcile.IsStart), the dump also tells
// which wanted destinations have no route at all: their first reconcile
// skips its lookup (see reconcile.Absent).
func (c *Controller) Keys(ctx context.Context) ([]string, error) {
	start := reconcile.IsStart(ctx)
	if start {
		c.absent.Begin()
	}
	keys := c.wantedKeys()
	link := c.store.Link()
	rs, err := c.h.Routes(&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		if start {
			c.absent.Drop()
		}
		return keys, fmt.Errorf("list routes: %w", err)
	}
	var absent map[netip.Prefix]struct{}
	if start {
		absent = make(map[netip.Prefix]struct{}, len(keys))
		for _, k := range keys {
			if p, err := ParseKey(k); err == nil {
				absent[p] = struct{}{}
			}
		}
	}
	for _, r := range rs {
		dst := netlinkx.Prefix(r.Dst)
		delete(absent, dst)
		if r.Protocol == netlinkx.RouteProtocol || (link.Present && flannelShaped(r, link.Index)) {
			keys = append(keys, dst.String())
		}
	}
	if absent != nil {
		c.absent.Set(absent)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// KernelChanged hears of a kernel change of the routes to destination key
// (the netlink watcher): it is looked up again, whatever the start dump said.
func (c *Controller) KernelChanged(key string) {
	if p, err := ParseKey(key); err == nil {
		c.absent.Forget(p)
	}
}

// Converged implements reconcile.Converger: the start-up pass is over.
func (c *Controller) Converged() { c.DropDump() }

// DropDump forgets what the start dump said: kernel notifications may have
// been lost.
func (c *Controller) DropDump() { c.absent.Drop() }

func (c *Controller) wantedKeys() []string {
	var keys []string
	for p := range c.gw {
		keys = append(keys, GatewayPrefix+p.String())
	}
	for p := range c.extra {
		keys = append(keys, ExtraPrefix+p.String())
	}
	for _, l := range c.store.LocalNetworks() {
		keys = append(keys, l.Subnet.String())
	}
	// Every claimed subnet, not only the remote ones: deciding which are
	// remote is each key's reconcile (a subnet of this host's or a refused
	// one then changes nothing), and resolving all of them here as well
	// cost a tenth of a second of a cold start at 10,000 records, before
	// the first route.
	for _, p := range c.store.Subnets() {
		keys = append(keys, p.String())
	}
	c.mu.Lock()
	for p := range c.conflicts {
		keys = append(keys, p.String()) // so a cleared conflict is reported cleared
	}
	c.mu.Unlock()
	slices.Sort(keys)
	return slices.Compact(keys)
}

// KeysFor maps a store change to the destinations it concerns: the subnets
// of a record, lease or local network before and after, and for a local
// network every record, lease or conflict subnet overlapping it; every key
// when the VXLAN device changed (its index, or this host's identity,
// changed) or a lease of this host appeared (flannel-shaped routes may now
// be swept).
func (c *Controller) KeysFor(ev state.Event) []string {
	var keys []string
	if ev.Kind == state.KindLink || ev.Kind == state.KindUnderlay || (ev.Kind == state.KindLease && c.selfLease(ev.New)) {
		keys, _ = c.Keys(context.Background()) // a failed dump still yields the wanted keys
	}
	var ps []netip.Prefix
	switch ev.Kind {
	case state.KindNetwork:
		for _, v := range []any{ev.Old, ev.New} {
			if n, ok := v.(registry.Network); ok {
				// Claims it overlaps may win or lose against it; the
				// subnets behind its VTEP may get another shared gateway.
				ps = append(ps, n.Subnet)
				ps = append(ps, c.store.Overlapping(n.Subnet)...)
				ps = append(ps, c.store.SubnetsWithMAC(n.VtepMAC.String())...)
			}
		}
	case state.KindLease:
		for _, v := range []any{ev.Old, ev.New} {
			if l, ok := v.(state.Lease); ok {
				ps = append(ps, l.Subnet)
				ps = append(ps, c.store.Overlapping(l.Subnet)...)
				if l.VtepMAC != nil {
					// It may bind its VTEP's records (overlay.Trust).
					ps = append(ps, c.store.SubnetsWithMAC(l.VtepMAC.String())...)
				}
			}
		}
	case state.KindHost:
		// A host record vouches for its host's VTEP (overlay.Trust.binding):
		// the records naming that VTEP, before and after, are concerned.
		for _, v := range []any{ev.Old, ev.New} {
			if h, ok := v.(registry.HostRecord); ok {
				ps = append(ps, c.subnetsOfMAC(h.VtepMAC)...)
			}
		}
	case state.KindLocal:
		for _, v := range []any{ev.Old, ev.New} {
			if l, ok := v.(state.LocalNetwork); ok {
				ps = append(ps, l.Subnet)
				ps = append(ps, c.overlapping(l.Subnet)...)
			}
		}
	}
	for _, p := range ps {
		if p.IsValid() {
			keys = append(keys, p.Masked().String())
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func (c *Controller) selfLease(v any) bool {
	l, ok := v.(state.Lease)
	if !ok {
		return false
	}
	link := c.store.Link()
	return overlay.IsSelfLease(l, c.self(link), link.MAC)
}

// subnetsOfMAC returns the subnets of the records and leases naming the
// VTEP MAC mac (as a host record spells it).
func (c *Controller) subnetsOfMAC(mac string) []netip.Prefix {
	m, err := net.ParseMAC(mac)
	if err != nil {
		return nil
	}
	return c.store.SubnetsWithMAC(m.String())
}

// overlapping returns the subnets of records, leases and reported conflicts
// that overlap p: a local network appearing or going changes how they are
// routed.
func (c *Controller) overlapping(p netip.Prefix) []netip.Prefix {
	if !p.IsValid() {
		return nil
	}
	out := c.store.Overlapping(p)
	if _, ok := c.store.Lease(p); ok || len(c.store.NetworksBySubnet(p)) > 0 {
		out = append(out, p)
	}
	c.mu.Lock()
	for q := range c.conflicts {
		if q.Overlaps(p) {
			out = append(out, q)
		}
	}
	c.mu.Unlock()
	return out
}
