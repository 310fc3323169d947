package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/controllers/underlay"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/legacy"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/status"
)

// statusListTimeout bounds how long status waits for etcd.
const statusListTimeout = 15 * time.Second

// Status prints the cluster as etcd holds it (--json: as JSON). It reads
// etcd and this host's kernel; it needs neither Docker nor the daemon, and
// writes nothing.
func (a *App) Status(ctx context.Context, w io.Writer) error {
	r, err := a.gatherStatus(ctx)
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return status.JSON(w, r)
	}
	return status.Table(w, r)
}

// listEtcd runs only the etcd watcher until its first listing is in the
// store (no registry, no Docker: nothing is written).
func (a *App) listEtcd(ctx context.Context) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.etcdW.Run(ctx) // returns nil when ctx ends; errors are retried inside
	}()
	stop = func() { cancel(); <-done }
	wctx, wcancel := context.WithTimeout(ctx, statusListTimeout)
	defer wcancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !a.store.Synced("etcd") {
		select {
		case <-wctx.Done():
			stop()
			return nil, fmt.Errorf("etcd %v not listed within %s", a.cfg.EtcdEndpoints, statusListTimeout)
		case <-t.C:
		}
	}
	return stop, nil // flannel's config came with the listing (onFlannelConfig)
}

func (a *App) gatherStatus(ctx context.Context) (status.Report, error) {
	// The device and the underlay first: they decide what is local and what
	// the trust policy refuses.
	if err := a.mgr.Runner(vxlan.Name).ReconcileNow(ctx, a.cfg.VXLANIface, "status"); err != nil {
		a.log.Debug("cannot read the VXLAN device", "error", err.Error())
	}
	if err := a.mgr.Runner(underlay.Name).ReconcileNow(ctx, underlay.Key, "status"); err != nil {
		a.log.Debug("cannot read the underlay", "error", err.Error())
	}
	stop, err := a.listEtcd(ctx)
	if err != nil {
		return status.Report{}, err
	}
	defer stop()

	r := status.Report{Host: a.cfg.HostName, Generated: time.Now().UTC().Truncate(time.Second)}
	gctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	entries, err := a.statusEntries(gctx)
	if err != nil {
		return status.Report{}, err
	}
	link := a.store.Link()
	self := overlay.SelfOf(a.cfg.HostName, a.cfg.PublicIP, a.policy(), a.store)
	subnets, conflicts := overlay.All(self, a.store.Networks(), a.store.Leases())

	r.Hosts = a.statusHosts(self.PublicIP, entries)
	r.Networks = a.statusNetworks(gctx, subnets, conflicts)
	for _, c := range conflicts {
		if c.Rule == "" {
			r.Conflicts = append(r.Conflicts, status.Conflict{Subnet: c.Prefix.String(), Reason: c.Reason, Claimants: c.Claimants})
		}
	}
	if r.Quarantined, err = a.quarantined(gctx); err != nil {
		return status.Report{}, err
	}
	los, err := legacy.Scan(gctx, a.etcd, a.keys())
	if err != nil {
		return status.Report{}, fmt.Errorf("scan for the original tool's keys: %w", err)
	}
	for _, lo := range los {
		r.Leftovers = append(r.Leftovers, status.Leftover{Kind: string(lo.Kind), Key: lo.Key, Host: lo.Host})
	}
	r.Local = a.localState(link, subnets)
	if e, ok := entries[a.cfg.HostName]; ok {
		r.Local.Recovery = recoveryLine(e.Recovery)
	} else {
		r.Local.Recovery = "daemon not running here (no status entry): reachability unknown"
	}
	return r, nil
}

// statusEntries reads every host's status entry, by host.
func (a *App) statusEntries(ctx context.Context) (map[string]HostStatus, error) {
	resp, err := a.etcd.Get(ctx, a.keys().Statuses(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", a.keys().Statuses(), err)
	}
	out := map[string]HostStatus{}
	for _, kv := range resp.Kvs {
		hs, err := DecodeHostStatus(kv.Value)
		if err != nil || hs.Host == "" {
			continue
		}
		out[hs.Host] = hs
	}
	return out, nil
}

func recoveryLine(r RecoveryStatus) string {
	s := r.Mode
	if s == "" {
		s = "off"
	}
	if r.Restarts24h > 0 {
		s += fmt.Sprintf(", %d restart(s) in 24h, last %s", r.Restarts24h, r.LastRestart.UTC().Format(time.RFC3339))
	}
	if r.Fault != "" {
		s += ", fault: " + r.Fault
	}
	return s
}

func actionsLine(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// statusHosts lists every host: those with a host record (alive), those
// known only from their records (stale), and flanneld hosts known only
// from their vxlan lease.
func (a *App) statusHosts(selfIP netip.Addr, entries map[string]HostStatus) []status.Host {
	byName := map[string]*status.Host{}
	for _, h := range a.store.Hosts() {
		byName[h.Host] = &status.Host{Name: h.Host, PublicIP: h.PublicIP, VtepMAC: h.VtepMAC, Version: h.Version, Alive: true}
	}
	for _, n := range a.store.Networks() {
		h, ok := byName[n.Host]
		if !ok {
			h = &status.Host{Name: n.Host, PublicIP: n.PublicIP.String(), VtepMAC: n.VtepMAC.String()}
			byName[n.Host] = h
		}
		h.Networks = append(h.Networks, n.Network.Network)
	}
	known := map[string]bool{}
	for _, h := range byName {
		known[h.PublicIP] = true
	}
	for _, l := range a.store.Leases() {
		if l.IsVXLAN() && !known[l.PublicIP.String()] {
			known[l.PublicIP.String()] = true
			byName[l.PublicIP.String()] = &status.Host{Name: l.PublicIP.String(), PublicIP: l.PublicIP.String(), VtepMAC: l.VtepMAC.String()}
		}
	}
	reach := map[string]PeerStatus{}
	if e, ok := entries[a.cfg.HostName]; ok {
		for _, p := range e.Peers {
			reach[p.PublicIP] = p
		}
		yes := true
		for _, ip := range e.ReachableOmitted { // listed by address only
			reach[ip] = PeerStatus{PublicIP: ip, Reachable: &yes}
		}
	}
	out := make([]status.Host, 0, len(byName))
	for _, h := range byName {
		slices.Sort(h.Networks)
		switch p, ok := reach[h.PublicIP]; {
		case h.Name == a.cfg.HostName || (selfIP.IsValid() && h.PublicIP == selfIP.String()):
			h.Reach = "self"
		case ok && p.Reachable != nil && *p.Reachable:
			h.Reach, h.RTTMillis = "reachable", p.RTTMillis
		case ok && p.Reachable != nil:
			h.Reach = "unreachable"
		default:
			h.Reach = "unknown"
		}
		if e, ok := entries[h.Name]; ok {
			h.Recovery = actionsLine(e.Recovery.Actions)
		}
		if h.Networks == nil {
			h.Networks = []string{}
		}
		out = append(out, *h)
	}
	slices.SortFunc(out, func(x, y status.Host) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// statusNetworks gives each record its state as this host sees it.
func (a *App) statusNetworks(ctx context.Context, subnets map[netip.Prefix]overlay.Subnet, conflicts []overlay.Conflict) []status.Network {
	groups := a.groups(ctx)
	var out []status.Network
	for _, n := range a.store.Networks() {
		sn := status.Network{Host: n.Host, Name: n.Network.Network, Subnet: n.Subnet.String(), Group: groups[n.Key]}
		switch s, ok := subnets[n.Subnet]; {
		case n.Host == a.cfg.HostName:
			sn.State = status.StateLocal
		case ok && s.Owner == n.Key:
			sn.State = status.StateRouted
		default:
			sn.State, sn.Detail = status.StateConflict, "another claim wins"
			for _, c := range conflicts {
				if c.Prefix == n.Subnet || c.Prefix.Overlaps(n.Subnet) {
					sn.Detail = c.Reason
					if c.Rule != "" {
						sn.State, sn.Detail = status.StateRefused, c.Rule+": "+c.Reason
					}
					break
				}
			}
		}
		out = append(out, sn)
	}
	slices.SortFunc(out, func(x, y status.Network) int {
		return strings.Compare(x.Host+"/"+x.Name, y.Host+"/"+y.Name)
	})
	return out
}

// groups reads each record's isolation groups (the record's "Groups" field;
// records without one have none), comma-joined.
func (a *App) groups(ctx context.Context) map[string]string {
	out := map[string]string{}
	resp, err := a.etcd.Get(ctx, a.keys().Records(), clientv3.WithPrefix())
	if err != nil {
		return out
	}
	for _, kv := range resp.Kvs {
		var v struct {
			Groups []string `json:"Groups"`
		}
		if json.Unmarshal(kv.Value, &v) == nil && len(v.Groups) > 0 {
			out[string(kv.Key)] = strings.Join(v.Groups, ",")
		}
	}
	return out
}

func (a *App) quarantined(ctx context.Context) ([]status.Quarantined, error) {
	p := a.keys().Records() + "_quarantine/"
	resp, err := a.etcd.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	var out []status.Quarantined
	for _, kv := range resp.Kvs {
		out = append(out, status.Quarantined{Key: string(kv.Key), Value: truncate(string(kv.Value), 200)})
	}
	return out, nil
}

// localState compares what this host should have on the VXLAN device with
// what the kernel holds: a route to each remote subnet through the device,
// and an FDB entry sending each remote VTEP MAC to its PublicIP.
func (a *App) localState(link state.Link, subnets map[netip.Prefix]overlay.Subnet) status.Local {
	l := status.Local{Desired: len(subnets), InSync: true}
	if !link.Present {
		l.VXLAN = a.cfg.VXLANIface + " missing"
		l.InSync = len(subnets) == 0
		if !l.InSync {
			l.Diffs = append(l.Diffs, fmt.Sprintf("%d remote subnets cannot be routed: %s is missing", len(subnets), a.cfg.VXLANIface))
		}
		return l
	}
	l.VXLAN = fmt.Sprintf("%s mac %s local %s vni %d mtu %d up %v", link.Name, link.MAC, link.Local, link.VNI, link.MTU, link.Up)
	routed := map[netip.Prefix]bool{}
	ours := map[netip.Prefix]bool{}
	if rs, err := a.nl.Routes(&netlink.Route{LinkIndex: link.Index}, netlink.RT_FILTER_OIF); err == nil {
		for _, r := range rs {
			if r.LinkIndex != link.Index || r.Dst == nil {
				continue
			}
			p := netlinkx.Prefix(r.Dst)
			routed[p] = true
			if r.Protocol == netlinkx.RouteProtocol {
				ours[p] = true
			}
		}
	}
	fdb := map[string]string{}
	if fs, err := a.nl.FDB(link.Index); err == nil {
		for _, f := range fs {
			fdb[f.HardwareAddr.String()] = netlinkx.Addr(f.IP).String()
		}
	}
	prefixes := make([]netip.Prefix, 0, len(subnets))
	for p := range subnets {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, overlay.ComparePrefix)
	for _, p := range prefixes {
		s := subnets[p]
		if !routed[p] {
			l.Diffs = append(l.Diffs, fmt.Sprintf("route %s dev %s: missing", p, link.Name))
		}
		if dst, ok := fdb[s.MAC()]; !ok || dst != s.PublicIP.String() {
			l.Diffs = append(l.Diffs, fmt.Sprintf("fdb %s dst %s: missing (kernel: %q)", s.MAC(), s.PublicIP, dst))
			fdb[s.MAC()] = s.PublicIP.String() // one line per VTEP
		}
	}
	for p := range ours {
		if _, ok := subnets[p]; !ok {
			l.Diffs = append(l.Diffs, fmt.Sprintf("route %s dev %s: ours but no longer wanted", p, link.Name))
		}
	}
	l.InSync = len(l.Diffs) == 0
	return l
}
