// Package subnets is the controller that publishes this host's Docker
// networks in etcd: per local network, a network record and a flannel
// reservation on the registration lease (pkg/registry), and the host record
// on its liveness lease.
//
// Keys are local Docker network names, plus HostKey for the host record.
// Nothing is published until the VXLAN device gives this host's identity
// (PublicIP, VtepMAC); until then Reconcile is a no-op and Waiting says why.
// A subnet claimed by someone else is a conflict: never overwritten, reported
// once through OnConflict, listed by Conflicts, and retried on every change
// of that subnet's lease and on resync. Another registrar using this host's
// name (cloned VMs, told apart by PublicIP) is never deleted or overwritten:
// it is reported once per registrar through OnDuplicateHost.
package subnets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name.
const Name = "subnets"

// HostKey is the key of the host record. Docker network names start with an
// alphanumeric character, so it never collides with one.
const HostKey = "_host"

// Enqueuer queues a key of a controller (*reconcile.Manager satisfies it).
type Enqueuer interface {
	Enqueue(controller, key, trigger string)
}

// Options configure the controller.
type Options struct {
	Store    *state.Store
	Registry *registry.Registry
	// PublicIP overrides the VXLAN device's local address (FLANNELD_PUBLIC_IP);
	// zero: use the device's.
	PublicIP  netip.Addr
	Version   string    // written to the host record
	StartTime time.Time // written to the host record; zero: time of New
	// OnConflict is called once when a network's conflict appears (or its
	// claimant changes), from a reconcile worker; it must not block.
	OnConflict func(registry.ConflictError)
	// OnConflictCleared is called when a reported conflict is gone.
	OnConflictCleared func(registry.ConflictError)
	// OnDuplicateHost is called once per other registrar (PublicIP) found
	// using this host's name; it must not block.
	OnDuplicateHost func(registry.DuplicateHost)
	// Enqueuer, when set, is poked to refresh the host record when the
	// counts it carries change.
	Enqueuer Enqueuer
	// Policy, when set, is the trust boundary a local network must pass to
	// be published (pkg/policy): the same rules peers apply to what they
	// program. Nothing is published until the underlay was observed.
	Policy *policy.Policy
	// OnRefused is called once when a local network is refused by the
	// policy (or its reason changes), and with nil when it passes again.
	OnRefused func(network string, r *policy.Refusal)
}

// Controller is the subnets controller.
type Controller struct {
	o    Options
	host string
	keys registry.Keys

	mu         sync.Mutex // guards conflicts, refused, registered, confirmed* and duplicates
	conflicts  map[string]registry.ConflictError
	refused    map[string]policy.Refusal
	registered map[string]netip.Prefix
	// confirmed is, per network, the record PutNetwork last confirmed in
	// etcd and the registration lease it was attached to (see unchanged).
	confirmed     map[string]confirmedRecord
	confirmedHost confirmedHostRecord
	duplicates    map[string]registry.DuplicateHost // by PublicIP
}

// New returns the controller.
func New(o Options) (*Controller, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("subnets: Store and Registry are required")
	}
	if o.StartTime.IsZero() {
		o.StartTime = time.Now().UTC().Truncate(time.Second)
	}
	return &Controller{
		o: o, host: o.Registry.Host(), keys: o.Registry.Keys(),
		conflicts:  map[string]registry.ConflictError{},
		refused:    map[string]policy.Refusal{},
		registered: map[string]netip.Prefix{},
		confirmed:  map[string]confirmedRecord{},
		duplicates: map[string]registry.DuplicateHost{},
	}, nil
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// identity is what this host publishes about itself.
type identity struct {
	ip  netip.Addr
	mac net.HardwareAddr
	vni int
}

func (id identity) registry() registry.Identity {
	return registry.Identity{PublicIP: id.ip, VtepMAC: id.mac}
}

// identity returns this host's identity, or why it is not known yet.
func (c *Controller) identity() (identity, string) {
	l := c.o.Store.Link()
	name := l.Name
	if name == "" {
		name = "VXLAN device"
	}
	if !l.Present {
		return identity{}, fmt.Sprintf("waiting for %s: not present", name)
	}
	mac, err := flannel.ParseVtepMAC(l.MAC.String())
	if err != nil {
		return identity{}, fmt.Sprintf("waiting for %s: no usable MAC (%v)", name, err)
	}
	ip := overlay.PublicIPOf(c.o.PublicIP, l, c.o.Store)
	if _, err := registry.ValidPublicIP(ip.String()); err != nil || !ip.IsValid() {
		return identity{}, fmt.Sprintf("waiting for %s: no usable local address (%q); set FLANNELD_PUBLIC_IP or give the device a local address", name, ip)
	}
	return identity{ip: ip, mac: mac, vni: l.VNI}, ""
}

// Waiting says why nothing is published yet; "" when this host's identity
// is known.
func (c *Controller) Waiting() string {
	_, why := c.identity()
	return why
}

// Reconcile converges one key: a local network name or HostKey.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	if key == HostKey {
		return c.reconcileHost(ctx)
	}
	id, why := c.identity()
	if why != "" {
		// Without our identity, our entries cannot be told from those of a
		// registrar using the same host name: touch nothing.
		return nil
	}
	local, ok := c.o.Store.Local(key)
	if !ok {
		c.setRefused(key, nil)
		return c.unregister(ctx, key, id)
	}
	return c.register(ctx, local, id)
}

func (c *Controller) register(ctx context.Context, local state.LocalNetwork, id identity) error {
	if c.o.Policy != nil {
		if !c.o.Store.Underlay().Observed {
			return nil // the underlay event enqueues every local network
		}
		if r := c.o.Policy.Check(local.Subnet, c.o.Store.Facts()); r != nil {
			if err := c.unregister(ctx, local.Name, id); err != nil {
				return err
			}
			c.setRefused(local.Name, r)
			return nil
		}
		c.setRefused(local.Name, nil)
	}
	n := registry.Network{
		Host: c.host, Network: local.Name, NetworkID: local.ID,
		Subnet: local.Subnet, Gateway: local.Gateway,
		PublicIP: id.ip, VtepMAC: id.mac, VNI: id.vni, Groups: local.Groups,
	}
	if c.unchanged(n) {
		return nil
	}
	res, err := c.o.Registry.PutNetwork(ctx, n)
	var ce *registry.ConflictError
	if errors.As(err, &ce) {
		if ce.Withdrawn {
			reconcile.Record(ctx, fmt.Sprintf("withdraw network %s %s (record and reservation): subnet %s held by %s",
				local.Name, withdrawnSubnet(ce), local.Subnet, ce.Claimant))
		}
		c.reportDuplicate(ce.Duplicate)
		c.setConflict(local.Name, *ce)
		c.mu.Lock()
		delete(c.confirmed, local.Name)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("register network %s %s: %w", local.Name, local.Subnet, err)
	}
	for _, q := range res.Quarantined {
		reconcile.Record(ctx, fmt.Sprintf("quarantine %s (legacy vxlan lease of this host: %s) to %s", q.Key, q.Value, q.To))
	}
	c.clearConflict(local.Name)
	c.setRegistered(local.Name, local.Subnet)
	c.confirm(n)
	what := fmt.Sprintf("network %s %s", local.Name, local.Subnet)
	switch res.Change {
	case registry.Created:
		reconcile.Record(ctx, "register "+what)
	case registry.Updated:
		reconcile.Record(ctx, "update "+what+" ("+strings.Join(res.Fields, ", ")+")")
	case registry.Reattached:
		reconcile.Record(ctx, fmt.Sprintf("re-attach %s to lease %x", what, int64(c.o.Registry.Lease())))
	}
	return nil
}

// withdrawnSubnet is the subnet our withdrawn record named, else the wanted one.
func withdrawnSubnet(ce *registry.ConflictError) netip.Prefix {
	if ce.WithdrawnSubnet.IsValid() {
		return ce.WithdrawnSubnet
	}
	return ce.Subnet
}

// confirmedHostRecord is the host record PutHost confirmed, with its lease.
type confirmedHostRecord struct {
	h     registry.HostRecord
	lease clientv3.LeaseID
}

// hostUnchanged says whether PutHost(h) would change nothing: confirmed by
// this process on the current liveness lease, and still so in the snapshot
// (see unchanged).
func (c *Controller) hostUnchanged(h registry.HostRecord) bool {
	c.mu.Lock()
	w := c.confirmedHost
	c.mu.Unlock()
	if w.lease == 0 || w.lease != c.o.Registry.HostLease() || !sameHost(w.h, h) {
		return false
	}
	cur, ok := c.o.Store.Host(c.host)
	return ok && sameHost(cur, h)
}

// sameHost compares host records as stored (StartTime without its
// monotonic reading, which JSON drops).
func sameHost(a, b registry.HostRecord) bool {
	ta, tb := a.StartTime, b.StartTime
	a.StartTime, b.StartTime = time.Time{}, time.Time{}
	return a == b && ta.Equal(tb)
}

// confirmedRecord is a record PutNetwork confirmed, with its lease.
type confirmedRecord struct {
	n     registry.Network
	lease clientv3.LeaseID
}

func (c *Controller) confirm(n registry.Network) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.confirmed[n.Network] = confirmedRecord{n: n, lease: c.o.Registry.Lease()}
}

// unchanged says whether registering n would change nothing in etcd: this
// process confirmed exactly n on the current registration lease, and the
// snapshot the watch keeps still shows that record and our reservation of
// its subnet. Then the periodic resync sends etcd nothing for n (a
// registration reads the whole subnet registry, so at INTERVAL it would
// cost every host O(cluster) per network). Any change there — a deleted or
// edited record, another claimant, a legacy lease, a new lease ID after
// etcd lost ours — shows in the snapshot or the lease, and registers anew.
func (c *Controller) unchanged(n registry.Network) bool {
	c.mu.Lock()
	w, ok := c.confirmed[n.Network]
	c.mu.Unlock()
	if !ok || w.lease != c.o.Registry.Lease() || w.lease == 0 || !sameNetwork(w.n, n) {
		return false
	}
	cur, ok := c.o.Store.Network(c.keys.Network(c.host, n.Network))
	if !ok || !sameNetwork(cur, n) {
		return false
	}
	l, ok := c.o.Store.Lease(n.Subnet)
	if !ok || l.Reservation == nil || l.Reservation.Host != c.host || l.Reservation.Network != n.Network {
		return false
	}
	// A claim overlapping the subnet (a lease or record inside or around
	// it) may be a conflict that only the registry's transaction decides.
	return len(c.o.Store.Overlapping(n.Subnet)) == 0
}

func sameNetwork(a, b registry.Network) bool {
	return a.Host == b.Host && a.Network == b.Network && a.NetworkID == b.NetworkID && a.Subnet == b.Subnet &&
		a.Gateway == b.Gateway && a.PublicIP == b.PublicIP && a.VtepMAC.String() == b.VtepMAC.String() && a.VNI == b.VNI &&
		slices.Equal(a.Groups, b.Groups)
}

func (c *Controller) unregister(ctx context.Context, name string, id identity) error {
	res, err := c.o.Registry.DeleteNetwork(ctx, name, id.registry(), c.ownSubnets(name)...)
	if err != nil {
		return fmt.Errorf("unregister network %s: %w", name, err)
	}
	c.reportDuplicate(res.Duplicate)
	c.clearConflict(name)
	c.setRegistered(name, netip.Prefix{})
	if res.Deleted() {
		reconcile.Record(ctx, fmt.Sprintf("unregister network %s %s", name, res.Subnet()))
	}
	return nil
}

// ownSubnets are the subnets where the snapshot shows a record or a
// reservation of ours for network name: the registry checks each.
func (c *Controller) ownSubnets(name string) []netip.Prefix {
	var out []netip.Prefix
	if n, ok := c.o.Store.Network(c.keys.Network(c.host, name)); ok {
		out = append(out, n.Subnet)
	}
	for _, l := range c.o.Store.Leases() {
		if r := l.Reservation; r != nil && r.Host == c.host && r.Network == name {
			out = append(out, l.Subnet)
		}
	}
	c.mu.Lock()
	if p, ok := c.registered[name]; ok {
		out = append(out, p)
	}
	c.mu.Unlock()
	return out
}

func (c *Controller) reconcileHost(ctx context.Context) error {
	id, why := c.identity()
	if why != "" {
		return nil
	}
	c.mu.Lock()
	nets, conflicts := len(c.registered), len(c.conflicts)
	c.mu.Unlock()
	h := registry.HostRecord{
		Host: c.host, PublicIP: id.ip.String(), VtepMAC: id.mac.String(), VNI: id.vni,
		Version: c.o.Version, StartTime: c.o.StartTime, Networks: nets, Conflicts: conflicts,
	}
	if c.hostUnchanged(h) {
		return nil
	}
	wrote, err := c.o.Registry.PutHost(ctx, h)
	if dup := (*registry.DuplicateHostError)(nil); errors.As(err, &dup) {
		// Retried when that host record changes or expires (KeysFor) and on resync.
		c.reportDuplicate(dup.DuplicateHost)
		return nil
	}
	if err != nil {
		return fmt.Errorf("host record: %w", err)
	}
	c.mu.Lock()
	c.confirmedHost = confirmedHostRecord{h: h, lease: c.o.Registry.HostLease()}
	c.mu.Unlock()
	if wrote {
		reconcile.Record(ctx, fmt.Sprintf("update host record %s (PublicIP %s, VtepMAC %s, %d networks, %d conflicts)",
			c.host, h.PublicIP, h.VtepMAC, nets, conflicts))
	}
	return nil
}

// ---- keys ----

// Keys returns every local network, every network of ours in etcd (records
// and reservations, so that leftovers are removed; not those of another
// registrar using our host name, which are reported) and HostKey.
func (c *Controller) Keys(context.Context) ([]string, error) {
	keys := []string{HostKey}
	for _, n := range c.o.Store.LocalNetworks() {
		keys = append(keys, n.Name)
	}
	keys = append(keys, c.snapshotOwn()...)
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// snapshotOwn returns the names of this host's networks in the snapshot the
// etcd watch keeps: those with a record under our host name, and those with
// a reservation naming this host (a record may be missing after a crash or
// a hand edit). The resync reads no etcd, so a host's etcd load does not
// grow with the cluster; the watch (re-listing when it falls behind) keeps
// the snapshot true. Entries of another registrar using our host name are
// left to the registry's transactions, which tell them apart by identity
// and report the duplicate.
func (c *Controller) snapshotOwn() []string {
	var names []string
	for _, n := range c.o.Store.Networks() {
		if pk, err := c.keys.Parse(n.Key); err == nil && pk.Kind == registry.KindNetwork && pk.Host == c.host {
			names = append(names, pk.Network)
		}
	}
	for _, l := range c.o.Store.Leases() {
		if l.Reservation != nil && l.Reservation.Host == c.host && l.Reservation.Network != "" {
			names = append(names, l.Reservation.Network)
		}
	}
	return names
}

// KeysFor maps a store change to the keys it concerns.
func (c *Controller) KeysFor(ev state.Event) []string {
	switch ev.Kind {
	case state.KindLocal:
		return []string{ev.Key, HostKey}
	case state.KindUnderlay:
		if c.o.Policy == nil {
			return nil
		}
		return c.localKeys()
	case state.KindLink:
		if !identityChanged(ev) {
			return nil
		}
		// Also our networks in etcd that are no longer local: one removed
		// while the identity was unknown (flannel.1 gone) was skipped then,
		// and would otherwise wait for the resync to be unregistered.
		keys := append(c.localKeys(), c.snapshotOwn()...)
		slices.Sort(keys)
		return slices.Compact(keys)
	case state.KindNetwork:
		// Our records: a hand edit or deletion is repaired at once.
		if pk, err := c.keys.Parse(ev.Key); err == nil && pk.Kind == registry.KindNetwork && pk.Host == c.host {
			return []string{pk.Network}
		}
	case state.KindLease:
		return c.leaseKeys(ev)
	case state.KindHost:
		if ev.Key == c.host {
			return []string{HostKey}
		}
	}
	return nil
}

// localKeys returns the host record and every local network.
func (c *Controller) localKeys() []string {
	keys := []string{HostKey}
	for _, n := range c.o.Store.LocalNetworks() {
		keys = append(keys, n.Name)
	}
	return keys
}

// leaseKeys: our reservations (repair), and the local networks whose subnet
// overlaps the lease's (an exact or overlapping conflict may have appeared or
// cleared); everything when it is flanneld's lease for this host's VTEP (it
// may change the PublicIP we publish, overlay.PublicIPOf).
func (c *Controller) leaseKeys(ev state.Event) []string {
	var keys []string
	link := c.o.Store.Link()
	for _, v := range []any{ev.Old, ev.New} {
		if l, ok := v.(state.Lease); ok && l.IsVXLAN() && len(link.MAC) == 6 && l.VtepMAC.String() == link.MAC.String() {
			keys = append(keys, c.localKeys()...)
		}
	}
	for _, v := range []any{ev.Old, ev.New} {
		if l, ok := v.(state.Lease); ok && l.Reservation != nil && l.Reservation.Host == c.host {
			keys = append(keys, l.Reservation.Network)
		}
	}
	if p, err := netip.ParsePrefix(ev.Key); err == nil {
		for _, n := range c.o.Store.LocalOverlapping(p) {
			keys = append(keys, n.Name)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// identityChanged says whether a link event changes what we publish.
func identityChanged(ev state.Event) bool {
	o, _ := ev.Old.(state.Link)
	n, _ := ev.New.(state.Link)
	return o.Present != n.Present || o.MAC.String() != n.MAC.String() || o.Local != n.Local || o.VNI != n.VNI
}
