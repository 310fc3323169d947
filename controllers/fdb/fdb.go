// Package fdb is the controller of the VXLAN device's link-layer entries, per
// remote VTEP (key: its MAC, lowercase): the bridge FDB entry
// "<MAC> dst <PublicIP> self permanent" and, for every remote subnet behind
// that VTEP, the neighbour "<subnet address> lladdr <MAC> nud permanent" —
// exactly what flanneld programs for a lease.
//
// Only flannel-shaped entries on the VXLAN device are swept: permanent
// neighbours whose address is no wanted subnet's, and permanent self FDB
// entries whose MAC is no wanted VTEP's (a peer's old MAC after its device
// was recreated). Entries a network record wanted (since this process
// started) are ours and always swept; any other only while the store holds a
// vxlan lease of this host, proof that it sees flanneld's registry (else a
// wrong FLANNEL_PREFIX would sweep everything flanneld programmed). Reads
// are point lookups, so a reconcile costs O(entries of its VTEP), not
// O(table).
package fdb

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name.
const Name = "fdb"

// Options configure the controller.
type Options struct {
	Host     string     // this host's name (HOST_NAME)
	PublicIP netip.Addr // FLANNELD_PUBLIC_IP; zero: see overlay.PublicIPOf
	// Policy, when set, is the trust boundary every remote claim must pass
	// (pkg/policy); nothing is programmed until the underlay was observed.
	Policy *policy.Policy
	// SweepGrace overrides how long a flannel-shaped object no lease wants
	// must stay unwanted before it is deleted (0: reconcile.DefaultGrace; < 0: none).
	SweepGrace time.Duration
	// Hold, when set and active, defers every deletion (see reconcile.Hold):
	// after etcd lost its data, the entries' owners re-register within
	// seconds.
	Hold *reconcile.Hold
}

// Controller converges FDB entries and neighbours.
type Controller struct {
	h     *netlinkx.Handle
	store *state.Store
	opts  Options

	mu sync.Mutex // guards seen, byMAC, ownFDB and ownNeigh
	// seen remembers the lladdr each neighbour address was last found with
	// (by Keys' dumps and our own writes), byMAC the reverse. They only
	// nominate candidates for sweeping and keys for notifications; every
	// candidate is re-read before it is deleted.
	seen map[netip.Addr]macKey
	// byMAC holds a slice, not a set: one or two addresses per VTEP, and
	// 10,000 one-entry maps cost about 3 MB of live heap.
	byMAC map[macKey][]netip.Addr
	// ownFDB and ownNeigh are the entries a network record wanted: ours,
	// swept also when the store cannot prove it sees flanneld's registry.
	ownFDB   map[string]struct{}
	ownNeigh map[neighEntry]struct{}
	// settle delays deleting entries only flanneld could have made (see
	// reconcile.Settle): their lease may not have arrived yet.
	settle *reconcile.Settle
	// vteps memoises the per-VTEP resolution per store version.
	vteps overlay.VTEPCache
	// absentFDB and absentNeigh hold the wanted VTEP MACs and neighbour
	// addresses the start resync's dumps found no entry for: their first
	// reconcile needs no lookup (see reconcile.Absent).
	absentFDB   reconcile.Absent[string]
	absentNeigh reconcile.Absent[netip.Addr]
}

type neighEntry struct {
	ip  netip.Addr
	mac string
}

// plan is the desired state derived from one version of the store.
type plan struct {
	version uint64
	link    state.Link
	self    overlay.Self
	l2      overlay.L2
	// sweep: the store holds a vxlan lease of this host, so entries no
	// lease or record wants may be swept (overlay.SeesFlannel).
	sweep bool
}

// New returns the fdb controller.
func New(h *netlinkx.Handle, store *state.Store, o Options) *Controller {
	return &Controller{h: h, store: store, opts: o, seen: map[netip.Addr]macKey{}, byMAC: map[macKey][]netip.Addr{},
		ownFDB: map[string]struct{}{}, ownNeigh: map[neighEntry]struct{}{}, settle: reconcile.NewSettle(o.SweepGrace)}
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// desired returns the whole desired state, for what needs every VTEP (the
// resync's keys, a device or underlay change). It is not kept: reconciles
// resolve their VTEP alone (vtep), and holding the whole link-layer state
// would cost memory in proportion to the cluster for nothing. It is built
// VTEP by VTEP from the store's indexes, as the reconciles decide
// (overlay.Resolver, which agrees with overlay.All and L2Of): a copy of
// every record and lease and the map of every remote subnet were 7 MB of
// the daemon's peak heap at 10,000 leases.
func (c *Controller) desired() *plan {
	v := c.store.Version() // read before the data: the plan is at least this new
	link := c.store.Link()
	self := c.self(link)
	p := &plan{version: v, link: link, self: self}
	if !self.Known() || (c.opts.Policy != nil && !c.store.Underlay().Observed) {
		return p
	}
	res := overlay.Resolver{Self: self, Index: c.store, Cache: &c.vteps, Version: v}
	macs := c.store.VTEPMACs()
	p.l2 = overlay.L2{FDB: make(map[string]netip.Addr, len(macs)), Neigh: make(map[netip.Addr]string, len(macs)),
		ByMAC: make(map[string][]netip.Addr, len(macs))}
	for _, mac := range macs {
		dst, ok, neighs := res.VTEPL2(mac)
		if !ok {
			continue
		}
		p.l2.FDB[mac] = dst
		if len(neighs) > 0 {
			p.l2.ByMAC[mac] = neighs
		}
		for _, ip := range neighs {
			p.l2.Neigh[ip] = mac
		}
		c.mu.Lock()
		for _, s := range res.VTEP(mac) {
			if s.Source == overlay.FromRecord {
				c.ownFDB[s.MAC()] = struct{}{}
				c.ownNeigh[neighEntry{s.Gateway(), s.MAC()}] = struct{}{}
			}
		}
		c.mu.Unlock()
	}
	p.sweep = overlay.SeesFlannel(c.store, self, link.MAC)
	return p
}

// Reconcile converges the entries of the VTEP MAC key. Its desired state is
// resolved from the claims on that VTEP's subnets alone (overlay.VTEPL2),
// so the work is proportional to the VTEP, not to every remote subnet.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	p, err := c.Plan(ctx, key)
	if err != nil || p == nil {
		return err
	}
	return c.Apply([]context.Context{ctx}, []reconcile.Plan{p})[0]
}

// converge converges the VTEP mac, whose desired state is p, as a whole,
// sweeps included, writing as it goes: the path of a VTEP whose reconcile
// may delete something.
func (c *Controller) converge(ctx context.Context, mac net.HardwareAddr, p *vtepPlan) error {
	key := mac.String()
	dev := p.link.Name
	var errs []error
	// Add before delete, so a VTEP whose entries move is never left without one.
	if p.hasFDB {
		want, err := c.fdbToSet(p.link.Index, mac, p.dst)
		errs = append(errs, c.set(ctx, dev, want, err))
	}
	for _, ip := range p.neighs {
		want, err := c.neighToSet(p.link.Index, mac, ip)
		errs = append(errs, c.set(ctx, dev, want, err))
	}
	var wait time.Duration
	errs = append(errs, c.sweepNeighs(ctx, p, dev, key, &wait))
	if !p.hasFDB && (p.sweep || c.ownsFDB(key)) {
		errs = append(errs, c.sweepFDB(ctx, p.link.Index, dev, mac, &wait))
	} else {
		c.settle.Clear("fdb " + key)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if wait > 0 {
		return reconcile.RequeueAfter(wait, "confirming that no lease or route still wants entries of VTEP "+key)
	}
	return nil
}

// vtepPlan is the desired state of one VTEP.
type vtepPlan struct {
	link    state.Link
	self    overlay.Self
	trusted bool // the trust boundary can be applied (see routes)
	subs    []overlay.Subnet
	dst     netip.Addr // FDB destination, when hasFDB
	hasFDB  bool
	neighs  []netip.Addr // neighbours this VTEP owns
	sweep   bool         // overlay.SeesFlannel
	res     overlay.Resolver
}

func (c *Controller) self(state.Link) overlay.Self {
	return overlay.SelfOf(c.opts.Host, c.opts.PublicIP, c.opts.Policy, c.store)
}

// resolver answers per-key questions with the current snapshot.
func (c *Controller) resolver() (overlay.Resolver, state.Link) {
	v := c.store.Version() // before the data: the answers are at least this new
	link := c.store.Link()
	return overlay.Resolver{Self: c.self(link), Index: c.store, Cache: &c.vteps, Version: v}, link
}

func (c *Controller) vtep(mac string) *vtepPlan {
	res, link := c.resolver()
	p := &vtepPlan{link: link, self: res.Self, res: res, trusted: c.opts.Policy == nil || c.store.Underlay().Observed}
	if !p.self.Known() || !p.trusted {
		return p
	}
	p.subs = res.VTEP(mac)
	p.dst, p.hasFDB, p.neighs = res.VTEPL2(mac)
	p.sweep = overlay.SeesFlannel(c.store, p.self, link.MAC)
	c.mu.Lock()
	for _, s := range p.subs {
		if s.Source == overlay.FromRecord {
			c.ownFDB[s.MAC()] = struct{}{}
			c.ownNeigh[neighEntry{s.Gateway(), s.MAC()}] = struct{}{}
			// The per-subnet neighbour an older version programmed: ours.
			c.ownNeigh[neighEntry{s.Prefix.Addr(), s.MAC()}] = struct{}{}
		}
	}
	c.mu.Unlock()
	return p
}

// settled says whether a flannel-shaped entry that only flanneld could have
// made (not ours) has been unwanted for the grace period; otherwise it
// records in *wait when to look again.
func (c *Controller) settled(what string, wait *time.Duration) bool {
	ok, left := c.settle.Ready(what)
	if !ok && (*wait == 0 || left < *wait) {
		*wait = left
	}
	if ok {
		c.settle.Clear(what)
	}
	return ok
}

// held says whether Options.Hold defers deletions now; if so, it records
// in *wait when to look again.
func (c *Controller) held(wait *time.Duration) bool {
	left := c.opts.Hold.Remaining()
	if left <= 0 {
		return false
	}
	if *wait == 0 || left < *wait {
		*wait = left
	}
	return true
}

// FDBEntry is flannel's FDB entry for a VTEP.
func FDBEntry(linkIndex int, mac net.HardwareAddr, dst netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: linkIndex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: dst.AsSlice(), HardwareAddr: mac}
}

// Neighbour is flannel's ARP neighbour for a subnet gateway.
func Neighbour(linkIndex int, mac net.HardwareAddr, ip netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: linkIndex, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: ip.AsSlice(), HardwareAddr: mac}
}

// set writes want, the entry fdbToSet or neighToSet found missing (nil:
// none; err: their read failed).
func (c *Controller) set(ctx context.Context, dev string, want *netlink.Neigh, err error) error {
	if err != nil || want == nil {
		return err
	}
	if err := c.h.NeighSet(want); err != nil {
		return err
	}
	reconcile.Record(ctx, changeLine(*want, dev))
	return nil
}

// fdbToSet returns the FDB entry of mac to set, nil when it is in place.
func (c *Controller) fdbToSet(index int, mac net.HardwareAddr, dst netip.Addr) (*netlink.Neigh, error) {
	var cur *netlink.Neigh
	if !c.absentFDB.Take(mac.String()) {
		var err error
		if cur, err = c.h.FDBEntry(index, mac); err != nil {
			return nil, err
		}
	}
	if cur != nil && netlinkx.Addr(cur.IP) == dst && cur.State&netlink.NUD_PERMANENT != 0 && cur.VNI == 0 {
		return nil, nil
	}
	return FDBEntry(index, mac, dst), nil
}

// neighToSet returns the neighbour ip of mac to set, nil when it is in
// place; either way ip is remembered as mac's.
func (c *Controller) neighToSet(index int, mac net.HardwareAddr, ip netip.Addr) (*netlink.Neigh, error) {
	var cur *netlink.Neigh
	if !c.absentNeigh.Take(ip) {
		var err error
		if cur, err = c.h.Neigh(index, ip); err != nil {
			return nil, err
		}
	}
	c.remember(mac, ip)
	if cur != nil && cur.HardwareAddr.String() == mac.String() && cur.State&netlink.NUD_PERMANENT != 0 {
		return nil, nil
	}
	return Neighbour(index, mac, ip), nil
}

// changeLine is the change line of setting n.
func changeLine(n netlink.Neigh, dev string) string {
	if n.Family == unix.AF_BRIDGE {
		return "fdb set " + netlinkx.FormatNeigh(n, dev)
	}
	return "neigh set " + netlinkx.FormatNeigh(n, dev)
}

// sweepNeighs deletes the permanent neighbours last seen with lladdr key
// that this VTEP no longer owns. An address another VTEP owns is left to
// that VTEP's reconcile, which replaces it; one a route of ours still uses
// (a record subnet not yet moved to its VTEP's shared gateway) waits for
// that route to be replaced. Without p.sweep only those a record wanted are
// deleted.
func (c *Controller) sweepNeighs(ctx context.Context, p *vtepPlan, dev, key string, wait *time.Duration) error {
	var errs []error
	for _, ip := range c.candidates(key) {
		if slices.Contains(p.neighs, ip) {
			c.settle.Clear("neigh " + ip.String())
			continue
		}
		if owner, ok := p.res.NeighOwner(ip); ok {
			c.settle.Clear("neigh " + ip.String())
			if owner != key {
				c.forget(key, ip)
			}
			continue
		}
		owned := c.ownsNeigh(ip, key)
		if !p.sweep && !owned {
			continue
		}
		if !owned && !c.settled("neigh "+ip.String(), wait) {
			continue
		}
		cur, err := c.h.Neigh(p.link.Index, ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur == nil || cur.HardwareAddr.String() != key || !permanentNeigh(*cur) {
			c.forget(key, ip)
			c.disownNeigh(ip, key)
			continue
		}
		if c.held(wait) {
			continue
		}
		used, err := c.routed(p, ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if used {
			if *wait == 0 || routeWait < *wait {
				*wait = routeWait
			}
			continue
		}
		if err := c.h.NeighDel(cur); err != nil {
			errs = append(errs, err)
			continue
		}
		c.forget(key, ip)
		c.disownNeigh(ip, key)
		reconcile.Record(ctx, "neigh del "+netlinkx.FormatNeigh(*cur, dev))
	}
	return errors.Join(errs...)
}

// routeWait is how soon a neighbour a route still uses is looked at again:
// the routes controller replaces such a route within its reconcile.
const routeWait = 100 * time.Millisecond

// routed says whether a route of ours on the device still goes via ip: a
// record subnet behind this VTEP not yet moved to the VTEP's current shared
// gateway (the per-subnet shape of an older version, or a gateway that
// moved). The neighbour is deleted only after the routes controller has
// replaced those routes, so no packet meets a gateway without a neighbour.
func (c *Controller) routed(p *vtepPlan, ip netip.Addr) (bool, error) {
	for _, s := range p.subs {
		if s.Source != overlay.FromRecord {
			continue
		}
		rs, err := c.h.RoutesTo(s.Prefix)
		if err != nil {
			return false, err
		}
		for _, r := range rs {
			if r.LinkIndex == p.link.Index && r.Protocol == netlinkx.RouteProtocol && netlinkx.Addr(r.Gw) == ip {
				return true, nil
			}
		}
	}
	return false, nil
}

func (c *Controller) sweepFDB(ctx context.Context, index int, dev string, mac net.HardwareAddr, wait *time.Duration) error {
	cur, err := c.h.FDBEntry(index, mac)
	if err != nil {
		return err
	}
	if cur == nil || !flannelFDB(*cur) {
		c.disownFDB(mac.String())
		c.settle.Clear("fdb " + mac.String())
		return nil
	}
	if !c.ownsFDB(mac.String()) && !c.settled("fdb "+mac.String(), wait) {
		return nil
	}
	if c.held(wait) {
		return nil
	}
	if err := c.h.NeighDel(cur); err != nil {
		return err
	}
	c.disownFDB(mac.String())
	reconcile.Record(ctx, "fdb del "+netlinkx.FormatNeigh(*cur, dev))
	return nil
}

// flannelFDB says whether an FDB entry looks like one flanneld (or we)
// program: the device's own, permanent, for a unicast VTEP MAC, not owned by
// a bridge master or an external control plane.
func flannelFDB(n netlink.Neigh) bool {
	mac := n.HardwareAddr
	return n.Flags&netlink.NTF_SELF != 0 && n.Flags&(netlink.NTF_MASTER|netlink.NTF_EXT_LEARNED) == 0 &&
		n.State&netlink.NUD_PERMANENT != 0 && len(mac) == 6 && mac[0]&1 == 0 && !slices.Equal(mac, make(net.HardwareAddr, 6))
}

// permanentNeigh says whether a neighbour looks like one flanneld (or we)
// program: permanent, with a unicast MAC.
func permanentNeigh(n netlink.Neigh) bool {
	return n.State&netlink.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0
}

// KeysFor maps a store change to the VTEPs it concerns: for a record or
// lease, the MACs before and after and every VTEP that claims or held the
// subnet's gateway; every key when the VXLAN device changed or a lease of
// this host appeared (entries no lease wants may now be swept).
func (c *Controller) KeysFor(ev state.Event) []string {
	var keys []string
	var subnets []netip.Prefix
	switch ev.Kind {
	case state.KindNetwork:
		for _, v := range []any{ev.Old, ev.New} {
			if n, ok := v.(registry.Network); ok {
				keys = append(keys, n.VtepMAC.String())
				subnets = append(subnets, n.Subnet)
			}
		}
	case state.KindLease:
		for _, v := range []any{ev.Old, ev.New} {
			if l, ok := v.(state.Lease); ok {
				if l.VtepMAC != nil {
					keys = append(keys, l.VtepMAC.String())
				}
				subnets = append(subnets, l.Subnet)
			}
		}
		if l, ok := ev.New.(state.Lease); ok {
			// Only a lease of this host needs the whole state (entries no
			// lease wants may now be swept): a lease event costs O(1) else.
			if link := c.store.Link(); overlay.IsSelfLease(l, c.self(link), link.MAC) {
				keys = append(keys, c.known(c.desired())...)
			}
		}
	case state.KindHost:
		// A host record vouches for its host's VTEP (overlay.Trust): the
		// VTEPs it names before and after are concerned.
		for _, v := range []any{ev.Old, ev.New} {
			if h, ok := v.(registry.HostRecord); ok {
				if m, err := net.ParseMAC(h.VtepMAC); err == nil {
					keys = append(keys, m.String())
				}
			}
		}
	case state.KindLink, state.KindUnderlay:
		// The device or the trust boundary's facts changed: any VTEP may be
		// concerned.
		keys = append(keys, c.known(c.desired())...)
	}
	for _, s := range subnets {
		keys = append(keys, c.claimants(s)...)
		for _, q := range c.store.Overlapping(s) {
			keys = append(keys, c.claimants(q)...)
		}
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "" })
	slices.Sort(keys)
	return slices.Compact(keys)
}

// known returns every wanted VTEP and every one last seen on the device.
func (c *Controller) known(p *plan) []string {
	keys := make([]string, 0, len(p.l2.FDB))
	for mac := range p.l2.FDB {
		keys = append(keys, mac)
	}
	c.mu.Lock()
	for mac := range c.byMAC {
		keys = append(keys, mac.String())
	}
	c.mu.Unlock()
	return keys
}

// claimants are the VTEPs that claim subnet s now (records, lease) or were
// last seen holding its gateway.
func (c *Controller) claimants(s netip.Prefix) []string {
	var keys []string
	for _, n := range c.store.NetworksBySubnet(s) {
		keys = append(keys, n.VtepMAC.String())
	}
	if l, ok := c.store.Lease(s); ok && l.VtepMAC != nil {
		keys = append(keys, l.VtepMAC.String())
	}
	return append(keys, c.seenWith(s.Addr())...)
}

// KeysForIP returns the VTEPs concerned by a change of the neighbour ip on
// the device: the one that wants it and those last seen holding it. The
// netlink watcher uses it for deleted neighbours, whose notification no
// longer carries the MAC.
func (c *Controller) KeysForIP(ip netip.Addr) []string {
	keys := c.seenWith(ip)
	res, _ := c.resolver()
	if mac, ok := res.NeighOwner(ip); ok {
		keys = append(keys, mac)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}
