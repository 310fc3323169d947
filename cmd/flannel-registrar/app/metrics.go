package app

// This file: what /metrics exports, read at scrape time.

import (
	"sort"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/metrics"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/probe"
)

// snapshot is what /metrics exports, read at scrape time.
func (a *App) snapshot() metrics.Snapshot {
	s := metrics.Snapshot{
		EtcdConnected:   a.etcdAnswers() == nil,
		DockerConnected: a.store.Synced("docker") && !a.dockerDown.isDown(),
		VXLANPresent:    a.store.Link().Present,
		Records:         len(a.store.Networks()),
		Leases:          len(a.store.Leases()),
		Hosts:           len(a.store.Hosts()),
		Conflicts:       len(a.subnets.Conflicts()),
		Refusals:        map[string]int{},
		InvalidSkipped:  a.etcdW.Invalid() + a.h.dockerInvalid.Load(),
		Quarantined:     a.h.quarantined.Load(),
		LastResync:      a.mgr.LastResync(),
	}
	fw := a.fwW.Stats()
	s.FirewallEvents = map[string]uint64{"reported": fw.Reported, "echo": fw.Echoes, "poll": fw.Polls}
	s.Ready = a.isSynced() && s.EtcdConnected && s.VXLANPresent
	for _, c := range a.routes.Conflicts() {
		if c.Active && c.Rule == "" {
			s.Conflicts++
		}
	}
	for _, r := range a.subnets.Refused() {
		s.Refusals[r.Rule]++
	}
	for _, r := range a.routes.Refused() {
		s.Refusals[r.Rule]++
	}
	stats := a.mgr.Stats()
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := stats[n]
		depth := 0
		if r := a.mgr.Runner(n); r != nil {
			depth = r.Len()
		}
		s.Controllers = append(s.Controllers, metrics.Controller{Name: n, Reconciles: st.Reconciles, Changes: st.Changes, Errors: st.Errors, QueueDepth: depth})
	}
	w := a.nl.WriteStats()
	s.KernelWrites = map[string]uint64{
		"route_replace": w.RouteReplace, "route_del": w.RouteDel, "neigh_set": w.NeighSet,
		"neigh_del": w.NeighDel, "fdb_set": w.FDBSet, "fdb_del": w.FDBDel, "iptables": a.fwd.Writes(),
	}
	s.Routes, s.Neighbours, s.FDB = a.managedObjects()
	if drops, err := a.fwd.GroupDrops(); err == nil {
		s.GroupDrops = make(map[string][2]uint64, len(drops))
		for g, c := range drops {
			s.GroupDrops[g] = [2]uint64{c.Packets, c.Bytes}
		}
	}
	a.h.mu.Lock()
	s.Leftovers = len(a.h.leftovers)
	s.Recovery = make(map[string]uint64, len(a.h.actions))
	for k, v := range a.h.actions {
		s.Recovery[k] = v
	}
	a.h.mu.Unlock()
	for _, p := range a.peerStates() {
		s.Peers = append(s.Peers, metrics.Peer{Host: p.Host, PublicIP: p.Key, Reachable: p.Reachable, Probed: p.Probed, RTT: p.RTT})
	}
	return s
}

func (a *App) peerStates() []probe.State {
	if a.h.prober == nil {
		return nil
	}
	return a.h.prober.States()
}

// managedObjects counts, on the VXLAN device, our routes and the flannel-
// shaped ones, the permanent neighbours and the FDB entries: what the
// registrar (and flanneld) keep there.
func (a *App) managedObjects() (routes, neighs, fdbs int) {
	l := a.store.Link()
	if !l.Present {
		return 0, 0, 0
	}
	if rs, err := a.nl.Routes(&netlink.Route{LinkIndex: l.Index}, netlink.RT_FILTER_OIF); err == nil {
		for _, r := range rs {
			if r.LinkIndex == l.Index && (r.Protocol == netlinkx.RouteProtocol || r.Protocol == netlinkx.FlannelRouteProtocol) {
				routes++
			}
		}
	}
	if ns, err := a.nl.Neighs(l.Index); err == nil {
		neighs = len(ns)
	}
	if fs, err := a.nl.FDB(l.Index); err == nil {
		fdbs = len(fs)
	}
	return routes, neighs, fdbs
}
