// Package underlay observes what this host needs to reach its peers and
// etcd, and records it in the store for the trust boundary (pkg/policy): its
// own addresses and connected routes outside flannel's and Docker's devices,
// the default gateways, the etcd endpoints with the next hops to them, and
// the configured HOST_GATEWAY_MAP destinations (peers behind a gateway).
// A subnet over any of those, routed into the tunnel, would cut the host off
// (seen in the lab: a /32 record on etcd's address). It never changes the
// kernel. Its one key is observed at start and on every resync, and when a
// local network (a Docker bridge, left out) or the VXLAN device changes.
package underlay

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name; Key its only key.
const (
	Name = "underlay"
	Key  = "underlay"
)

// resolveTimeout bounds the lookup of etcd endpoints given by name.
const resolveTimeout = 2 * time.Second

// dockerBridge matches the bridges Docker names itself (docker0, br-<id>).
var dockerBridge = regexp.MustCompile(`^(docker0|br-[0-9a-f]{12})$`)

// Options configure the controller.
type Options struct {
	VXLANIface    string   // flannel's device, left out
	EtcdEndpoints []string // ETCD_ENDPOINT's URLs
	// PeerRoutes are the HOST_GATEWAY_MAP destinations: configured, not
	// observed, so they count before their routes exist.
	PeerRoutes []netip.Prefix
	// Resolver looks up endpoints given by name; nil: net.DefaultResolver.
	Resolver *net.Resolver
}

// Controller observes the underlay.
type Controller struct {
	h     *netlinkx.Handle
	store *state.Store
	o     Options
}

// New returns the controller.
func New(h *netlinkx.Handle, store *state.Store, o Options) *Controller {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	return &Controller{h: h, store: store, o: o}
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// Keys returns the one key.
func (c *Controller) Keys(context.Context) ([]string, error) { return []string{Key}, nil }

// KeysFor returns the key when a local network (its bridge is left out) or the VXLAN device
// changed.
func (c *Controller) KeysFor(ev state.Event) []string {
	if ev.Kind == state.KindLocal || ev.Kind == state.KindLink {
		return []string{Key}
	}
	return nil
}

// Reconcile observes the underlay and stores it when it changed.
func (c *Controller) Reconcile(ctx context.Context, _ string) error {
	u, err := c.Observe(ctx)
	if err != nil {
		return err
	}
	old := c.store.Underlay()
	c.store.SetUnderlay(state.Underlay{Underlay: u}, "underlay")
	if now := c.store.Underlay(); !old.Observed || fmt.Sprint(old.Underlay) != fmt.Sprint(now.Underlay) {
		reconcile.Record(ctx, fmt.Sprintf("observe underlay: addresses %v, connected %v, gateways %v, etcd path %v, peers via gateways %v",
			u.Addrs, u.Routes, u.Gateways, u.Etcd, u.Peers))
	}
	return nil
}

// Observe reads the underlay from the kernel, sorted.
func (c *Controller) Observe(ctx context.Context) (policy.Underlay, error) {
	var u policy.Underlay
	links, err := c.h.Links()
	if err != nil {
		return u, fmt.Errorf("list links: %w", err)
	}
	skip := c.skipped(links)
	addrs, err := c.h.Addrs()
	if err != nil {
		return u, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p := netlinkx.Prefix(a.IPNet); p.IsValid() && !skip[a.LinkIndex] && !p.Addr().IsLoopback() {
			u.Addrs = append(u.Addrs, netip.PrefixFrom(netlinkx.Addr(a.IP), p.Bits()))
		}
	}
	routes, err := c.h.Routes(&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return u, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		dst := netlinkx.Prefix(r.Dst)
		switch {
		case skip[r.LinkIndex]:
		case (!dst.IsValid() || dst.Bits() == 0) && r.Gw != nil:
			u.Gateways = append(u.Gateways, netlinkx.Addr(r.Gw))
		case dst.IsValid() && r.Scope == netlink.SCOPE_LINK && r.Protocol != netlinkx.RouteProtocol:
			u.Routes = append(u.Routes, dst)
		}
	}
	u.Etcd = c.etcdPath(ctx)
	for _, p := range c.o.PeerRoutes {
		u.Peers = append(u.Peers, p.Masked())
	}
	sortPrefixes(u.Peers)
	sortPrefixes(u.Addrs)
	sortPrefixes(u.Routes)
	u.Gateways = sortAddrs(u.Gateways)
	u.Etcd = sortAddrs(u.Etcd)
	return u, nil
}

// skipped are the links that are not the underlay: loopback, the VXLAN
// device and Docker's bridges.
func (c *Controller) skipped(links []netlink.Link) map[int]bool {
	bridges := map[string]bool{}
	for _, l := range c.store.LocalNetworks() {
		bridges[l.Bridge] = true
	}
	skip := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if a.Name == c.o.VXLANIface || a.Flags&net.FlagLoopback != 0 || bridges[a.Name] || dockerBridge.MatchString(a.Name) {
			skip[a.Index] = true
		}
	}
	return skip
}

// etcdPath returns each etcd endpoint's addresses and the next hop the
// kernel uses to reach it. A name that does not resolve is left out (the
// etcd client cannot reach it either).
func (c *Controller) etcdPath(ctx context.Context) []netip.Addr {
	var out []netip.Addr
	for _, e := range c.o.EtcdEndpoints {
		for _, ip := range c.endpointAddrs(ctx, e) {
			out = append(out, ip)
			if r, ok, err := c.h.RouteGet(ip); err == nil && ok && r.Gw != nil {
				out = append(out, netlinkx.Addr(r.Gw))
			}
		}
	}
	return out
}

func (c *Controller) endpointAddrs(ctx context.Context, endpoint string) []netip.Addr {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []netip.Addr{ip.Unmap()}
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := c.o.Resolver.LookupNetIP(ctx, "ip4", u.Hostname())
	if err != nil {
		return nil
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
}

func sortAddrs(as []netip.Addr) []netip.Addr {
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}
