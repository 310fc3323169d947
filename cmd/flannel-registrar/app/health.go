package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/legacy"
	"github.com/flannel-registrar/flannel-registrar/pkg/metrics"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/probe"
	"github.com/flannel-registrar/flannel-registrar/pkg/recovery"
)

// Health endpoints, served on METRICS_ADDR.
const (
	PathMetrics = "/metrics"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// healthTick is the period of the health loop: the etcd reachability check,
// the recovery guard's evaluation, the leftover queue.
const healthTick = time.Second

// etcdCheckTimeout bounds the "etcd reachable now" check of /readyz.
const etcdCheckTimeout = time.Second

// health is the app's operational state: what the endpoints, the status
// entry and the recovery guard need beyond the controllers' own counters.
type health struct {
	beat          atomic.Int64 // unix nanoseconds of the health loop's last tick
	etcdOK        atomic.Bool  // the last etcd check answered
	dockerInvalid atomic.Uint64
	quarantined   atomic.Uint64
	prescanned    atomic.Bool // Run tried the leftover scan before the controllers started
	scanned       atomic.Bool // the leftover scan of this start is done

	prober *probe.Prober // nil when the ICMP socket could not be opened

	mu        sync.Mutex                 // guards the fields below
	pending   map[string]int64           // invalid etcd keys to classify, with their revision
	leftovers map[string]legacy.Leftover // the original tool's keys, by key
	guard     *recovery.Guard
	actions   map[string]uint64 // recovery decisions by action
	lastLocal netip.Addr        // the VXLAN device's last known local address
	kick      chan struct{}
}

func newHealth(cfg config.Config) *health {
	return &health{
		pending:   map[string]int64{},
		leftovers: map[string]legacy.Leftover{},
		guard:     recovery.New(recovery.Options{Grace: cfg.RecoveryGrace, Cooldown: cfg.RecoveryCooldown, DailyCap: cfg.RecoveryDailyCap}),
		actions:   map[string]uint64{},
		kick:      make(chan struct{}, 1),
	}
}

// onInvalidEtcd is the etcd watcher's OnInvalid hook. It must not block the
// watcher: the key is classified by the health loop (one read each).
func (a *App) onInvalidEtcd(key string, rev int64, err error) {
	a.h.mu.Lock()
	a.h.pending[key] = rev
	a.h.mu.Unlock()
	select {
	case a.h.kick <- struct{}{}:
	default:
	}
	a.log.Debug("invalid etcd item", "key", key, "revision", rev, "error", err.Error())
}

// startHealth runs the endpoints, the prober, the health loop and the status
// entry until ctx ends; the returned func joins them.
func (a *App) startHealth(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	if a.cfg.MetricsAddr != "" {
		srv := &http.Server{Addr: a.cfg.MetricsAddr, Handler: a.healthMux(), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			a.log.Error("metrics and health endpoints not served", "addr", a.cfg.MetricsAddr, "error", err.Error())
		} else {
			a.log.Info("serving metrics and health", "addr", ln.Addr().String(), "paths", []string{PathMetrics, PathHealthz, PathReadyz})
			wg.Go(func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					a.log.Error("metrics server stopped", "error", err.Error())
				}
			})
			wg.Go(func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx) // nothing to do if a client hangs; Close below
				_ = srv.Close()
			})
		}
	}
	if conn, err := probe.Listen(); err != nil {
		a.log.Warn("peer reachability not probed (needs CAP_NET_RAW)", "error", err.Error())
	} else {
		a.h.prober = probe.New(conn, probe.Options{Interval: a.cfg.ProbeInterval, OnChange: a.logPeer})
		wg.Go(func() {
			if err := a.h.prober.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("prober stopped", "error", err.Error())
			}
		})
	}
	wg.Go(func() { a.healthLoop(ctx) })
	wg.Go(func() { a.publishStatus(ctx) })
	return wg.Wait
}

func (a *App) logPeer(s probe.State) {
	switch {
	case !s.Reachable:
		a.log.Warn("peer unreachable", "peer", s.Host, "public_ip", s.Key, "vxlan_addr", s.Addr.String(),
			"lost_probes", s.Misses, "last_reply", s.LastReply)
	case s.Received > 1 || s.Sent > s.Received:
		a.log.Info("peer reachable again", "peer", s.Host, "public_ip", s.Key, "rtt", s.RTT)
	default:
		a.log.Debug("peer reachable", "peer", s.Host, "public_ip", s.Key, "rtt", s.RTT)
	}
}

func (a *App) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(PathMetrics, metrics.Handler(metrics.NewRegistry(a.snapshot)))
	mux.HandleFunc(PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		if err := a.alive(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if missing := a.notReady(r.Context()); len(missing) > 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, m := range missing {
				_, _ = fmt.Fprintln(w, m)
			}
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	return mux
}

// alive says whether the daemon's loops run: the health loop ticked lately.
func (a *App) alive() error {
	last := time.Unix(0, a.h.beat.Load())
	if since := time.Since(last); since > 10*healthTick {
		return fmt.Errorf("health loop last ran %s ago", since.Round(time.Millisecond))
	}
	return nil
}

// notReady lists what keeps the daemon from being ready; empty when ready.
func (a *App) notReady(ctx context.Context) []string {
	var out []string
	select {
	case <-a.synced:
	default:
		out = append(out, "first Docker and etcd listings not done")
	}
	if err := a.checkEtcd(ctx); err != nil {
		out = append(out, "etcd unreachable: "+err.Error())
	}
	if !a.store.Link().Present {
		out = append(out, "VXLAN device "+a.cfg.VXLANIface+" missing")
	}
	return out
}

// checkEtcd reads one key with a short timeout: etcd answers now.
func (a *App) checkEtcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, etcdCheckTimeout)
	defer cancel()
	_, err := a.etcd.Get(ctx, a.keys().FlannelConfig(), clientv3.WithCountOnly())
	return err
}

// healthLoop ticks the heartbeat, checks etcd, classifies invalid keys and
// runs the recovery guard.
func (a *App) healthLoop(ctx context.Context) {
	t := time.NewTicker(healthTick)
	defer t.Stop()
	for {
		a.h.beat.Store(time.Now().UnixNano())
		a.h.etcdOK.Store(a.checkEtcd(ctx) == nil)
		if a.h.prescanned.Load() && !a.h.scanned.Load() {
			a.h.scanned.Store(a.scanLeftovers(ctx)) // the scan before the start failed: retry
		}
		if a.h.scanned.Load() {
			a.classifyPending(ctx, true)
		}
		a.updateTargets()
		a.recover(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.h.kick:
		}
	}
}

func (a *App) isSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

// prescan runs the leftover scan once the sources are listed and before the
// controllers start: the subnets controller would otherwise unregister this
// host's plain-CIDR entries (keys of its own name that are not local
// networks) before they are copied to _quarantine.
func (a *App) prescan(ctx context.Context) {
	a.h.scanned.Store(a.scanLeftovers(ctx))
	a.h.prescanned.Store(true)
}

// scanLeftovers lists the original tool's keys once per start, logs one
// summary line, and moves aside those that are this host's to move.
func (a *App) scanLeftovers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	los, err := legacy.Scan(ctx, a.etcd, a.keys())
	if err != nil {
		a.log.Debug("cannot scan for the original tool's keys yet", "error", err.Error())
		return false
	}
	a.h.mu.Lock()
	for _, lo := range los {
		a.h.leftovers[lo.Key] = lo
		delete(a.h.pending, lo.Key)
	}
	a.h.mu.Unlock()
	if len(los) > 0 {
		sum := legacy.Summary(los)
		a.log.Warn("found keys the original flannel-registrar (bash) left; this host's are moved to _quarantine, others are left to their hosts (see `flannel-registrar doctor`)",
			"network_text", sum[legacy.NetworkText], "host_status", sum[legacy.HostStatus],
			"exists_marker", sum[legacy.Exists], "loopback_leases", sum[legacy.LoopbackVXLAN])
	}
	for _, lo := range los {
		a.moveLeftover(ctx, lo)
	}
	return true
}

// classifyPending reads each invalid key reported since the last tick: the
// original's leftovers are tracked (and, with move, moved when ours to
// move), anything else is reported as an invalid item.
func (a *App) classifyPending(ctx context.Context, move bool) {
	a.h.mu.Lock()
	pending := a.h.pending
	a.h.pending = map[string]int64{}
	a.h.mu.Unlock()
	for key, rev := range pending {
		rctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		resp, err := a.etcd.Get(rctx, key)
		cancel()
		if err != nil || len(resp.Kvs) == 0 {
			continue // gone, or etcd down: a re-list reports it again
		}
		kv := resp.Kvs[0]
		lo, ok := legacy.Classify(a.keys(), key, kv.Value)
		if !ok {
			a.log.Warn("skipped invalid etcd item", "key", key, "revision", rev, "value", truncate(string(kv.Value), 200))
			continue
		}
		a.h.mu.Lock()
		_, known := a.h.leftovers[key]
		a.h.leftovers[key] = lo
		a.h.mu.Unlock()
		if !known {
			a.log.Info("key left by the original flannel-registrar", "key", key, "kind", string(lo.Kind), "host", lo.Host)
		}
		if move {
			a.moveLeftover(ctx, lo)
		}
	}
}

func (a *App) moveLeftover(ctx context.Context, lo legacy.Leftover) {
	if !lo.Movable(a.cfg.HostName) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	resp, err := a.etcd.Get(ctx, lo.Key)
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	kv := resp.Kvs[0]
	moved, err := legacy.Quarantine(ctx, a.etcd, a.keys(), lo.Key, kv.ModRevision, string(kv.Value))
	switch {
	case err != nil:
		a.log.Warn("cannot quarantine a leftover key; retrying at the next re-list", "key", lo.Key, "error", err.Error())
	case moved:
		a.h.quarantined.Add(1)
		a.h.mu.Lock()
		delete(a.h.leftovers, lo.Key)
		a.h.mu.Unlock()
		a.log.Warn("quarantined and removed a key the original tool left", "key", lo.Key, "kind", string(lo.Kind),
			"to", a.keys().QuarantineKey(lo.Key), "value", truncate(string(kv.Value), 200))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// selfPublicIP is this host's VTEP address: the override, else the device's
// local address (remembered while the device is gone).
func (a *App) selfPublicIP() netip.Addr {
	if a.cfg.PublicIP.IsValid() {
		return a.cfg.PublicIP
	}
	l := a.store.Link()
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	if l.Present && l.Local.IsValid() {
		a.h.lastLocal = l.Local
	}
	return a.h.lastLocal
}

// peerTargets are the remote VTEPs: one per flannel vxlan lease that is not
// this host's, probed at the lease's network address (flannel.1's address
// on that host).
func (a *App) peerTargets() []probe.Target {
	self := a.selfPublicIP()
	link := a.store.Link()
	names := map[string]string{}
	for _, h := range a.store.Hosts() {
		names[h.PublicIP] = h.Host
	}
	var out []probe.Target
	for _, l := range a.store.Leases() {
		if !l.IsVXLAN() || l.PublicIP == self || (link.Present && l.VtepMAC.String() == link.MAC.String()) {
			continue
		}
		out = append(out, probe.Target{Key: l.PublicIP.String(), Host: names[l.PublicIP.String()], Addr: l.Subnet.Masked().Addr()})
	}
	return out
}

func (a *App) updateTargets() {
	if a.h.prober != nil {
		a.h.prober.SetTargets(a.peerTargets())
	}
}

// fault is what the recovery guard acts on, "" when healthy. The lease is
// judged only while etcd answers and was listed: an etcd outage must never
// restart flanneld.
func (a *App) fault() string {
	if !a.store.Link().Present {
		return "VXLAN device " + a.cfg.VXLANIface + " missing"
	}
	ip := a.selfPublicIP()
	if !a.h.etcdOK.Load() || !a.isSynced() || !ip.IsValid() {
		return ""
	}
	if _, ok := a.store.VXLANLeaseWithPublicIP(ip); !ok {
		return "flannel lease for this host (PublicIP " + ip.String() + ") missing from etcd"
	}
	return ""
}

// recover runs the guard once and acts on its decision.
func (a *App) recover(ctx context.Context) {
	if a.cfg.Recovery != config.RecoveryFlannel {
		return
	}
	fault := a.fault()
	a.h.mu.Lock()
	d := a.h.guard.Observe(time.Now(), fault)
	if d.New {
		a.h.actions[string(d.Action)]++
	}
	a.h.mu.Unlock()
	if !d.New {
		return
	}
	name := a.cfg.FlannelContainerName
	switch d.Action {
	case recovery.ActionRestart:
		a.log.Warn("recovery: restarting the flannel container", "container", name, "reason", d.Reason, "fault_for", d.For.Round(time.Millisecond))
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.docker.ContainerRestart(rctx, name, container.StopOptions{})
		cancel()
		if err != nil {
			a.h.mu.Lock()
			a.h.actions["restart_failed"]++
			a.h.mu.Unlock()
			a.log.Error("recovery: restart failed", "container", name, "error", err.Error())
			return
		}
		a.log.Info("recovery: flannel container restarted", "container", name)
	case recovery.ActionSkippedCooldown:
		a.log.Warn("recovery: not restarting, the last restart is within RECOVERY_COOLDOWN", "container", name, "reason", d.Reason, "cooldown", a.cfg.RecoveryCooldown)
	case recovery.ActionSkippedCap:
		a.log.Error("recovery: not restarting, RECOVERY_DAILY_CAP reached; fix flanneld by hand", "container", name, "reason", d.Reason, "cap", a.cfg.RecoveryDailyCap)
	}
}

// snapshot is what /metrics exports, read at scrape time.
func (a *App) snapshot() metrics.Snapshot {
	s := metrics.Snapshot{
		EtcdConnected:   a.h.etcdOK.Load(),
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

// HostStatus is this host's entry under <ConfigPrefix>/_status/: the view
// from here that `status` shows for every host.
type HostStatus struct {
	Host      string         `json:"Host"`
	Updated   time.Time      `json:"Updated"`
	Ready     bool           `json:"Ready"`
	Peers     []PeerStatus   `json:"Peers"`
	Recovery  RecoveryStatus `json:"Recovery"`
	Leftovers int            `json:"Leftovers"`
}

// PeerStatus is one peer's reachability from the host of a HostStatus.
type PeerStatus struct {
	Host      string  `json:"Host,omitempty"`
	PublicIP  string  `json:"PublicIP"`
	Reachable *bool   `json:"Reachable"` // nil: not decided yet
	RTTMillis float64 `json:"RTTMillis,omitempty"`
}

// RecoveryStatus is the recovery guard as seen by status.
type RecoveryStatus struct {
	Mode    string            `json:"Mode"`
	Actions map[string]uint64 `json:"Actions,omitempty"`
	recovery.Status
}

func (a *App) hostStatus() HostStatus {
	hs := HostStatus{Host: a.cfg.HostName, Ready: a.isSynced() && a.h.etcdOK.Load() && a.store.Link().Present}
	for _, p := range a.peerStates() {
		ps := PeerStatus{Host: p.Host, PublicIP: p.Key}
		if p.Probed {
			r := p.Reachable
			ps.Reachable = &r
			if r {
				ps.RTTMillis = float64(p.RTT.Microseconds()) / 1000
			}
		}
		hs.Peers = append(hs.Peers, ps)
	}
	a.h.mu.Lock()
	hs.Recovery = RecoveryStatus{Mode: a.cfg.Recovery, Status: a.h.guard.Status(time.Now())}
	if len(a.h.actions) > 0 {
		hs.Recovery.Actions = map[string]uint64{}
		for k, v := range a.h.actions {
			hs.Recovery.Actions[k] = v
		}
	}
	hs.Leftovers = len(a.h.leftovers)
	a.h.mu.Unlock()
	return hs
}

// statusRefresh is how often an entry whose only change is round-trip
// times is rewritten.
const statusRefresh = time.Minute

// significant is hs without what changes on every probe.
func significant(hs HostStatus) HostStatus {
	peers := make([]PeerStatus, len(hs.Peers))
	for i, p := range hs.Peers {
		p.RTTMillis = 0
		peers[i] = p
	}
	hs.Peers = peers
	return hs
}

// publishStatus keeps this host's status entry in etcd on a lease of its
// own (TTL HOST_LIVENESS, kept alive), rewriting it when it changes.
func (a *App) publishStatus(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var (
		lease clientv3.LeaseID
		lost  atomic.Bool
		last  []byte
		wrote time.Time
		wg    sync.WaitGroup
	)
	defer wg.Wait()
	defer func() {
		// A stopped daemon's view is gone at once, not when its lease expires.
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = a.etcd.Revoke(rctx, lease) // best effort: the lease expires anyway
			cancel()
		}
	}()
	key := a.keys().Status(a.cfg.HostName)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hs := a.hostStatus()
		val, err := json.Marshal(significant(hs))
		if err != nil {
			continue
		}
		// Round-trip times change with every probe: they alone refresh the
		// entry once a minute, so a quiet cluster costs etcd almost nothing.
		if lease != 0 && !lost.Load() && string(val) == string(last) && time.Since(wrote) < statusRefresh {
			continue
		}
		// The time is set only when something changed: an unchanged entry
		// costs etcd nothing.
		hs.Updated = time.Now().UTC().Truncate(time.Second)
		out, err := json.Marshal(hs)
		if err != nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		if lease == 0 || lost.Load() {
			g, err := a.etcd.Grant(wctx, int64(a.cfg.HostLivenessTTL/time.Second))
			if err != nil {
				cancel()
				continue
			}
			ch, err := a.etcd.KeepAlive(ctx, g.ID)
			if err != nil {
				cancel()
				continue
			}
			lease = g.ID
			lost.Store(false)
			wg.Go(func() {
				for range ch { //nolint:revive // drain: the client needs its answers read
				}
				lost.Store(true)
			})
		}
		if _, err := a.etcd.Put(wctx, key, string(out), clientv3.WithLease(lease)); err == nil {
			last, wrote = val, time.Now()
		}
		cancel()
	}
}

// DecodeHostStatus parses a status entry.
func DecodeHostStatus(b []byte) (HostStatus, error) {
	var hs HostStatus
	if err := json.Unmarshal(b, &hs); err != nil {
		return HostStatus{}, fmt.Errorf("decode status entry: %w", err)
	}
	return hs, nil
}
