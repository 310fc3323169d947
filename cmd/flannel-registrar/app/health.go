package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/legacy"
	"github.com/flannel-registrar/flannel-registrar/pkg/metrics"
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

// etcdAnswerMaxAge is how recent etcd's last answer to the etcd watcher
// must be for "etcd answers now" (/readyz, the recovery guard, the
// connected metric). The watcher asks for a progress notification every
// second (its stream's keep-alive and its check that etcd kept its
// history) and reads one key, with a 2 s timeout, while the stream is
// silent; a separate read of our own each second would be a host's only
// steady-state read.
const etcdAnswerMaxAge = 3 * time.Second

// health is the app's operational state: what the endpoints, the status
// entry and the recovery guard need beyond the controllers' own counters.
type health struct {
	beat          atomic.Int64 // unix nanoseconds of the health loop's last tick
	etcdOK        atomic.Bool  // etcd answered lately, at the last tick: what the recovery guard acts on
	dockerInvalid atomic.Uint64
	quarantined   atomic.Uint64
	prescanned    atomic.Bool // Run tried the leftover scan before the subnets controller started
	scanned       atomic.Bool // the leftover scan of this start is done

	prober *probe.Prober // nil when the ICMP socket could not be opened

	targets targetCache

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
	mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		if missing := a.notReady(); len(missing) > 0 {
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
func (a *App) notReady() []string {
	var out []string
	select {
	case <-a.synced:
	default:
		out = append(out, "first Docker and etcd listings not done")
	}
	if err := a.etcdAnswers(); err != nil {
		out = append(out, "etcd unreachable: "+err.Error())
	}
	if !a.store.Link().Present {
		out = append(out, "VXLAN device "+a.cfg.VXLANIface+" missing")
	}
	return out
}

// etcdAnswers says whether etcd answers now: it answered the etcd watcher
// within etcdAnswerMaxAge.
func (a *App) etcdAnswers() error {
	if a.etcdW == nil {
		return errors.New("not watched")
	}
	last := a.etcdW.LastAnswered()
	if last.IsZero() {
		return errors.New("no answer yet")
	}
	if age := time.Since(last); age > etcdAnswerMaxAge {
		return fmt.Errorf("no answer for %s", age.Round(100*time.Millisecond))
	}
	return nil
}

// healthLoop ticks the heartbeat, checks etcd, classifies invalid keys and
// runs the recovery guard.
func (a *App) healthLoop(ctx context.Context) {
	t := time.NewTicker(healthTick)
	defer t.Stop()
	for {
		a.h.beat.Store(time.Now().UnixNano())
		a.h.etcdOK.Store(a.etcdAnswers() == nil)
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
// on that host). The list is shared: callers must not modify it.
func (a *App) peerTargets() []probe.Target {
	ts, _ := a.cachedTargets(false)
	return ts
}

// targetCache holds the last peer targets with what they were derived from:
// the health loop asks every tick, and listing and sorting 10,000 leases
// each second was a quarter of the registrar's CPU at that scale.
type targetCache struct {
	mu      sync.Mutex // guards the fields below
	valid   bool
	version uint64     // the store's version the targets were derived at
	self    netip.Addr // this host's VTEP address they leave out
	targets []probe.Target
	pushed  bool // the prober has these targets
}

// cachedTargets returns the targets, and whether they differ from the last
// ones handed to the prober; push marks these as handed.
func (a *App) cachedTargets(push bool) (ts []probe.Target, changed bool) {
	version := a.store.Version() // before the data: a change in between only recomputes again
	self := a.selfPublicIP()
	c := &a.h.targets
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.valid || c.version != version || c.self != self {
		c.targets, c.version, c.self, c.valid, c.pushed = a.computePeerTargets(self), version, self, true, false
	}
	changed = !c.pushed
	c.pushed = c.pushed || push
	return c.targets, changed
}

func (a *App) computePeerTargets(self netip.Addr) []probe.Target {
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

// updateTargets hands the prober the targets when they changed.
func (a *App) updateTargets() {
	if a.h.prober == nil {
		return
	}
	if ts, changed := a.cachedTargets(true); changed {
		a.h.prober.SetTargets(ts)
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

// statusRefresh is how often an entry whose only change is round-trip
// times is rewritten: rarely, because in steady state a host should send
// etcd little but keep-alives (a round-trip time in `status` may be this
// old; a peer becoming unreachable is a change and is written at once).
const statusRefresh = 10 * time.Minute
