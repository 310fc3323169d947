// Package app wires the daemon together: clients (etcd, Docker, netlink),
// the state store, the watchers that feed it, the controllers that converge
// the host and etcd, and the logging of what they report. Watchers report
// facts; this package decides which controller each fact concerns (the
// event-to-keys routing) and what to log. The packages it wires only return
// errors and call hooks. It lives beside the command that runs it, so that
// nothing in pkg/ knows a controller or a watcher.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	dockerclient "github.com/docker/docker/client"
	"github.com/vishvananda/netns"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	"github.com/flannel-registrar/flannel-registrar/controllers/underlay"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	dockerwatch "github.com/flannel-registrar/flannel-registrar/watchers/docker"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
	fwwatch "github.com/flannel-registrar/flannel-registrar/watchers/firewall"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"
)

// etcdRequestTimeout bounds one etcd operation: short enough that a request
// caught by an outage fails (and is retried with backoff) soon after etcd is
// back.
const etcdRequestTimeout = 5 * time.Second

// controller is what the app needs of every controller.
type controller interface {
	reconcile.Controller
	KeysFor(ev state.Event) []string
}

// App is one running registrar.
type App struct {
	cfg     config.Config
	log     *slog.Logger
	version string

	store *state.Store
	mgr   *reconcile.Manager

	etcd   *clientv3.Client
	docker *dockerclient.Client
	nl     *netlinkx.Handle
	reg    *registry.Registry

	etcdW   *etcdwatch.Watcher
	dockerW *dockerwatch.Watcher
	nlW     *nlwatch.Watcher
	fwW     *fwwatch.Watcher // firewall.go

	vxlan    *vxlan.Controller
	underlay *underlay.Controller
	subnets  *subnets.Controller
	fdb      *fdb.Controller
	routes   *routes.Controller
	fwd      *forwarding.Controller
	ipt      *forwarding.GoIPTables
	ctrls    []controller

	dockerDown *outage
	h          *health // endpoints, prober, recovery, leftovers (health.go)

	mismatchMu sync.Mutex      // guards mismatch
	mismatch   map[string]bool // PublicIP mismatches already reported

	synced chan struct{} // closed when Docker and etcd have both been listed
	once   sync.Once
	// prescanned is closed when Run's leftover scan is over: the subnets
	// controller starts after it, the others do not wait for it.
	prescanned chan struct{}
	// neighboursFirst is closed when the fdb controller's first pass is
	// over (or after neighboursWait): the routes controller starts after
	// it (see Run).
	neighboursFirst chan struct{}

	// leaseLost hands the registry's OnLeaseLost to a goroutine of ours
	// (runDeferred): the hook runs on the keep-alive goroutine and must not
	// block, but the resync it asks for reads etcd.
	leaseLost chan struct{}
	// reregister hands onHistoryLost's re-registration to runDeferred.
	reregister chan struct{}
	// hold keeps routes and neighbours of records that vanished when etcd
	// lost its data, until their owners wrote them again (etcdloss.go).
	hold *reconcile.Hold
}

// New builds the app from a validated configuration. It opens clients but
// does not contact etcd or Docker yet: those may be down at start.
func New(cfg config.Config, log *slog.Logger, version string) (*App, error) {
	a := &App{cfg: cfg, log: log, version: version, store: state.New(), synced: make(chan struct{}), prescanned: make(chan struct{}), neighboursFirst: make(chan struct{}), mismatch: map[string]bool{},
		leaseLost: make(chan struct{}, 1), reregister: make(chan struct{}, 1), hold: &reconcile.Hold{}}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	a.mgr = reconcile.NewManager(cfg.Interval, log)
	a.h = newHealth(cfg)
	a.dockerDown = &outage{log: log, msg: "docker unavailable; keeping registrations and routes as they are"}
	if err := a.openClients(); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.buildControllers(); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.buildWatchers(); err != nil {
		a.Close()
		return nil, err
	}
	a.store.Subscribe(a.route)
	return a, nil
}

func (a *App) openClients() error {
	ec := clientv3.Config{
		Endpoints:   a.cfg.EtcdEndpoints,
		DialTimeout: 5 * time.Second,
		// gRPC pings an idle connection after 10 s at the soonest (its
		// floor) and gives up 2 s later. The timeout is also the
		// connection's TCP user timeout: data unacknowledged for 2 s (a
		// member gone from the network) closes it, and the client moves
		// the request's retry, the lease keep-alive and the watch (which
		// sends a progress request every second, see watchers/etcd) to
		// another member within a few seconds.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// gRPC's default reconnect backoff grows to 2 minutes: after a long
		// etcd outage the daemon would notice etcd's return that late.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
		Username: a.cfg.EtcdUsername,
		Password: a.cfg.EtcdPassword,
		Logger:   zap.NewNop(),
	}
	if a.cfg.EtcdCAFile != "" || a.cfg.EtcdCertFile != "" {
		tlsInfo := transport.TLSInfo{CertFile: a.cfg.EtcdCertFile, KeyFile: a.cfg.EtcdKeyFile, TrustedCAFile: a.cfg.EtcdCAFile}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return fmt.Errorf("etcd TLS (ETCD_CAFILE/ETCD_CERTFILE/ETCD_KEYFILE): %w", err)
		}
		ec.TLS = tc
	}
	var err error
	if a.etcd, err = clientv3.New(ec); err != nil {
		return fmt.Errorf("etcd client for %v: %w", a.cfg.EtcdEndpoints, err)
	}
	if a.docker, err = dockerwatch.NewClient(); err != nil {
		return fmt.Errorf("docker client (DOCKER_HOST): %w", err)
	}
	if a.nl, err = netlinkx.Open(netns.None()); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	a.reg, err = registry.New(registry.Config{
		Client:          a.etcd,
		Keys:            a.keys(),
		Host:            a.cfg.HostName,
		RegistrationTTL: a.cfg.RegistrationTTL,
		HostLivenessTTL: a.cfg.HostLivenessTTL,
		RequestTimeout:  etcdRequestTimeout,
		OnLeaseLost:     a.onLeaseLost,
	})
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// onLeaseLost is the registry's OnLeaseLost: it logs and queues a resync of
// the subnets controller for runDeferred, without waiting for it (it runs on
// the registry's keep-alive goroutine). Losses while one is queued share it.
func (a *App) onLeaseLost(which string) {
	a.log.Warn("etcd lease lost (etcd unreachable for longer than its TTL, revoked, or etcd lost its data); writing again on a new lease", "lease", which)
	select {
	case a.leaseLost <- struct{}{}:
	default: // a resync is queued already and covers this one
	}
}

// runDeferred runs the work hooks queued, until ctx ends.
func (a *App) runDeferred(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.leaseLost:
			a.resyncOne(subnets.Name, "etcd:lease-lost")
		case <-a.reregister:
			a.reregisterAll(ctx)
		}
	}
}

func (a *App) keys() registry.Keys {
	return registry.Keys{FlannelPrefix: a.cfg.FlannelPrefix, ConfigPrefix: a.cfg.ConfigPrefix}
}

// policy is the trust boundary from the settings (pkg/policy).
func (a *App) policy() *policy.Policy {
	return &policy.Policy{Allowed: a.cfg.AllowedSubnets, MinBits: a.cfg.MinPrefixLen}
}

func (a *App) buildControllers() error {
	var err error
	a.vxlan = vxlan.New(a.nl, a.store, a.cfg.VXLANIface)
	a.underlay = underlay.New(a.nl, a.store, underlay.Options{VXLANIface: a.cfg.VXLANIface, EtcdEndpoints: a.cfg.EtcdEndpoints,
		PeerRoutes: gatewayDsts(a.cfg.HostGatewayMap)})
	a.subnets, err = subnets.New(subnets.Options{
		Policy:            a.policy(),
		OnRefused:         a.onRefused,
		Store:             a.store,
		Registry:          a.reg,
		PublicIP:          a.cfg.PublicIP,
		Version:           a.version,
		StartTime:         time.Now(),
		Enqueuer:          a.mgr,
		OnConflict:        a.onConflict,
		OnConflictCleared: a.onConflictCleared,
		OnDuplicateHost: func(d registry.DuplicateHost) {
			a.log.Error("another registrar uses this host name; its entries are left alone (set a unique HOST_NAME)",
				"host", d.Host, "publicIP", d.PublicIP, "vtepMAC", d.VtepMAC, "key", d.Key)
		},
	})
	if err != nil {
		return fmt.Errorf("subnets controller: %w", err)
	}
	a.fdb = fdb.New(a.nl, a.store, fdb.Options{Host: a.cfg.HostName, PublicIP: a.cfg.PublicIP, Policy: a.policy(), Hold: a.hold})
	a.routes = routes.New(a.nl, a.store, routes.Options{
		Host: a.cfg.HostName, PublicIP: a.cfg.PublicIP,
		Gateways: a.cfg.HostGatewayMap, Extra: a.cfg.RoutesExtra,
		Policy: a.policy(),
		Hold:   a.hold,
		OnConflict: func(c routes.Conflict) {
			switch {
			case !c.Active:
				a.log.Info("routing conflict cleared", "subnet", c.Prefix.String())
			case c.Rule != "":
				a.log.Error("subnet not routed: refused by policy", "subnet", c.Prefix.String(),
					"rule", c.Rule, "reason", c.Reason, "claimants", c.Claimants)
			default:
				a.log.Error("subnet not routed into the tunnel: conflicting claims", "subnet", c.Prefix.String(),
					"reason", c.Reason, "claimants", c.Claimants, "local", c.Local)
			}
		},
	})
	if a.ipt, err = forwarding.NewIPTables(); err != nil {
		return fmt.Errorf("forwarding controller: %w", err)
	}
	a.fwd, err = forwarding.New(a.store, forwarding.Options{
		VXLAN: a.cfg.VXLANIface, IPTables: a.ipt,
		Filter: a.registered,
		IPSets: a.nl,
		Policy: a.policy(),
		Host:   a.cfg.HostName, PublicIP: a.cfg.PublicIP,
		Hold: a.hold,
	})
	if err != nil {
		return fmt.Errorf("forwarding controller: %w", err)
	}
	// Order matters for one-shot mode: observe the device, then register,
	// then program peers, then forwarding.
	a.ctrls = []controller{a.vxlan, a.underlay, a.subnets, a.fdb, a.routes, a.fwd}
	for _, c := range a.ctrls {
		o := reconcile.Options{Workers: workers(c.Name())}
		switch c.Name() {
		case subnets.Name:
			o.After = a.prescanned // see prescan
		case routes.Name:
			o.After = a.neighboursFirst // see Run
		}
		a.mgr.Add(c, o)
	}
	return nil
}

// onConflict logs a network's registration conflict and re-evaluates the
// forwarding rules: a network in conflict loses its rules (see registered).
// The conflict is recorded before the hook runs, so the forwarding
// reconcile sees it.
func (a *App) onConflict(c registry.ConflictError) {
	a.log.Error("network not registered: subnet already claimed",
		"network", c.Network, "subnet", c.Subnet.String(), "claimant", c.Claimant, "key", c.Key, "withdrawn", c.Withdrawn)
	a.mgr.Enqueue(forwarding.Name, forwarding.Key, "subnets:conflict "+c.Network)
}

// onConflictCleared logs the end of a conflict and gives the network its
// forwarding rules back.
func (a *App) onConflictCleared(c registry.ConflictError) {
	a.log.Info("subnet conflict cleared", "network", c.Network, "subnet", c.Subnet.String())
	a.mgr.Enqueue(forwarding.Name, forwarding.Key, "subnets:conflict-cleared "+c.Network)
}

// onRefused logs a local network the policy refuses (or passes again) and
// re-evaluates the forwarding rules (see registered).
func (a *App) onRefused(network string, r *policy.Refusal) {
	a.mgr.Enqueue(forwarding.Name, forwarding.Key, "policy:"+network)
	if r == nil {
		a.log.Info("local network passes the policy again", "network", network)
		return
	}
	a.log.Error("local network not published: refused by policy", "network", network,
		"subnet", r.Subnet.String(), "rule", r.Rule, "reason", r.Detail)
}

// registered says whether a local network is registered without conflict
// (and not refused by the policy): only those get forwarding rules.
func (a *App) registered(n state.LocalNetwork) bool {
	// The policy is asked directly too: the forwarding reconcile may run
	// before the subnets controller has looked at a new network.
	if !a.store.Underlay().Observed || a.policy().Check(n.Subnet, a.store.Facts()) != nil {
		return false
	}
	if _, refused := a.subnets.Refused()[n.Name]; refused {
		return false
	}
	for _, c := range a.subnets.Conflicts() {
		if c.Network == n.Name {
			return false
		}
	}
	return true
}

// workers per controller: kernel writers are cheap and parallel-safe per key;
// etcd writes wait on the network, so more of them overlap better.
func workers(name string) int {
	switch name {
	case subnets.Name:
		return 4
	case routes.Name, fdb.Name:
		return 2
	}
	return 1
}

func (a *App) buildWatchers() error {
	var err error
	a.etcdW, err = etcdwatch.New(etcdwatch.Options{
		Client: a.etcd, Keys: a.keys(), Store: a.store,
		// Classified off the watcher's goroutine (health.go): the original
		// tool's leftovers are summarised, anything else is warned about.
		OnInvalid:     a.onInvalidEtcd,
		OnRelist:      func(reason string) { a.log.Info("re-listing etcd", "reason", reason) },
		OnHistoryLost: a.onHistoryLost,
		// Watched with both prefixes: no periodic read of its own.
		OnFlannelConfig: a.onFlannelConfig,
	})
	if err != nil {
		return fmt.Errorf("etcd watcher: %w", err)
	}
	a.dockerW = dockerwatch.New(a.docker, a.store, dockerwatch.Options{
		// Docker rewrote its iptables rules: ours must stay first.
		OnRulesChanged: func(trigger string) { a.mgr.Enqueue(forwarding.Name, forwarding.Key, trigger) },
		OnSkip: func(name, reason string) {
			a.log.Debug("docker network not registered", "network", name, "reason", reason)
		},
		OnInvalid: func(name, reason string) {
			a.h.dockerInvalid.Add(1)
			a.log.Warn("docker network not usable", "network", name, "reason", reason)
		},
		OnConnected: func(v string) {
			a.dockerDown.reset()
			a.log.Info("connected to docker", "version", v)
			if w := forwarding.DirectRoutingWarning(v, a.cfg.VXLANIface); w != "" {
				a.log.Warn(w)
			}
		},
		OnDisconnected: a.dockerDown.report,
	})
	// Every periodic resync re-lists Docker: a missed network event (a
	// create, a destroy, a namesake's) heals within INTERVAL, not only at
	// the next reconnect.
	a.mgr.OnResync(func(string) { a.dockerW.Relist() })
	a.nlW = nlwatch.New(a.nl, nlwatch.Options{
		Iface:    a.cfg.VXLANIface,
		OnChange: KernelChanges(a.mgr, a.fdb.KeysForIP, a.routes, a.fdb),
		// On the watcher's own resync goroutine: it may block. Changes
		// may have been missed, so what the start resync's dump proved
		// absent is no longer known.
		Resync: func() {
			a.routes.DropDump()
			a.fdb.DropDump()
			a.resyncAll("netlink-resubscribed")
		},
		OnBroken: func(err error, retryIn time.Duration) {
			a.log.Warn("netlink subscription broken; re-subscribing", "error", err.Error(), "retry_in", retryIn)
		},
		OnError: func(err error) { a.log.Debug("netlink subscription error", "error", err.Error()) },
	})
	a.buildFirewallWatcher()
	return nil
}

// startSources runs the registry's lease keeper and every watcher until ctx
// ends; wait joins them.
func (a *App) startSources(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	run := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("component stopped", "component", name, "error", err.Error())
			}
		})
	}
	wg.Go(func() { a.runDeferred(ctx) })
	run("registry", a.reg.Run)
	run("etcd watcher", a.etcdW.Run)
	run("docker watcher", a.dockerW.Run)
	run("netlink watcher", a.nlW.Run)
	run("firewall watcher", a.fwW.Run)
	return wg.Wait
}

// waitSynced blocks until Docker and etcd were both listed, saying every
// few seconds what it waits for.
func (a *App) waitSynced(ctx context.Context) error {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.synced:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			var missing []string
			if !a.store.Synced("docker") {
				missing = append(missing, "docker")
			}
			if !a.store.Synced("etcd") {
				missing = append(missing, "etcd")
			}
			a.log.Warn("waiting for the first listing before changing anything", "waiting_for", missing, "etcd", a.cfg.EtcdEndpoints)
		}
	}
}

// Run is the daemon: it returns when ctx ends.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("starting", "version", a.version, "config", a.cfg)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := a.startSources(ctx)
	defer wait()
	defer a.startHealth(ctx)()
	// The device is observed right away so that waiting for it is reported
	// even while etcd or Docker are still down.
	a.observeLink(ctx)
	if err := a.waitSynced(ctx); err != nil {
		return nil //nolint:nilerr // stopped while waiting: a clean exit
	}
	a.log.Info("sources listed; reconciling", "local_networks", len(a.store.LocalNetworks()), "records", len(a.store.Networks()), "leases", len(a.store.Leases()))
	var wg sync.WaitGroup
	// Only the subnets controller must wait for the leftover scan (another
	// read of the whole prefix). It runs once the peers are programmed (the
	// fdb and routes controllers' first passes, milliseconds on a small
	// cluster): at 10,000 remote subnets it would otherwise hold its copy
	// of the prefix while they hold theirs, and take CPU from them.
	// A pass kept open by constant churn delays it by prescanWait at most.
	wg.Go(func() {
		deadline := time.After(prescanWait)
	wait:
		for _, n := range []string{fdb.Name, routes.Name} {
			select {
			case <-a.mgr.Runner(n).StartPassDone():
			case <-deadline:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		a.prescan(ctx)
		close(a.prescanned)
	})
	// The routes controller's first pass follows the fdb controller's: every
	// route then finds its gateway's neighbour in place, and the two
	// passes' batches of kernel writes (reconcile.Planner) do not wait on
	// each other for the kernel's lock.
	wg.Go(func() {
		select {
		case <-a.mgr.Runner(fdb.Name).StartPassDone():
		case <-time.After(neighboursWait):
		case <-ctx.Done():
		}
		close(a.neighboursFirst)
	})
	wg.Go(func() { a.reportCounters(ctx) })
	a.mgr.Run(ctx)
	wg.Wait()
	a.log.Info("stopped")
	return nil
}

// neighboursWait bounds how long the routes controller waits for the fdb
// controller's first pass.
const neighboursWait = 5 * time.Second

// prescanWait bounds how long the leftover scan, and with it the subnets
// controller, waits for the peers' first passes.
const prescanWait = 15 * time.Second

func (a *App) observeLink(ctx context.Context) {
	if err := a.mgr.Runner(vxlan.Name).ReconcileNow(ctx, a.cfg.VXLANIface, "start"); err != nil {
		a.log.Warn("cannot read the VXLAN device", "iface", a.cfg.VXLANIface, "error", err.Error())
	}
	if err := a.mgr.Runner(underlay.Name).ReconcileNow(ctx, underlay.Key, "start"); err != nil {
		a.log.Warn("cannot read the underlay; nothing is routed or published until it is read", "error", err.Error())
	}
}

// OnceTimeout bounds how long one-shot mode waits for etcd and Docker.
const OnceTimeout = 60 * time.Second

// Once lists the sources, runs every controller over every key once, and
// returns the joined errors.
func (a *App) Once(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	wait := a.startSources(ctx)
	defer func() { cancel(); wait() }()
	a.observeLink(ctx)
	wctx, wcancel := context.WithTimeout(ctx, OnceTimeout)
	defer wcancel()
	if err := a.waitSynced(wctx); err != nil {
		return fmt.Errorf("docker and etcd not both listed within %s: %w", OnceTimeout, err)
	}
	if a.scanLeftovers(ctx) {
		a.classifyPending(ctx, true)
	}
	err := a.mgr.Once(ctx)
	if err == nil {
		a.log.Info("one pass done", "stats", a.mgr.Stats())
	}
	return err
}

// Close releases the clients.
func (a *App) Close() {
	var errs []error
	if a.nl != nil {
		a.nl.Close()
	}
	if a.docker != nil {
		errs = append(errs, a.docker.Close())
	}
	if a.etcd != nil {
		errs = append(errs, a.etcd.Close())
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Debug("close", "error", err.Error())
	}
}

// gatewayDsts are the HOST_GATEWAY_MAP destinations: underlay for the policy.
func gatewayDsts(gws []config.GatewayRoute) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(gws))
	for _, g := range gws {
		out = append(out, g.Dst)
	}
	return out
}
