package app

// This file: which controllers a fact concerns (store events, kernel changes).

import (
	"context"
	"net/netip"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"
)

// Enqueuer queues a key of a controller (*reconcile.Manager satisfies it).
type Enqueuer interface {
	Enqueue(controller, key, trigger string)
}

// Hinted is a controller that answers the first lookups of a cold start
// from the start resync's dump (reconcile.Absent): a kernel change of one
// of its keys must make it look that key up again.
type Hinted interface {
	Name() string
	KernelChanged(key string)
}

// KernelChanges routes the netlink watcher's changes to the controllers
// they concern: the device to vxlan, a route to the routes key of its
// destination (which also converges HOST_GATEWAY_MAP/FLANNEL_ROUTES_EXTRA
// routes to it), an FDB entry to the fdb key of its MAC, and a neighbour to
// the fdb key of its MAC and of every VTEP that wants its address (a
// deleted neighbour has lost its MAC, a replaced one carries the wrong one).
// The hinted controllers (routes, fdb) hear of the change before its keys
// are queued.
func KernelChanges(q Enqueuer, neighKeys func(netip.Addr) []string, hinted ...Hinted) func(nlwatch.Change) {
	tell := func(name, key string) {
		for _, h := range hinted {
			if h.Name() == name {
				h.KernelChanged(key)
			}
		}
	}
	return func(c nlwatch.Change) {
		switch c.Object {
		case nlwatch.Link:
			q.Enqueue(vxlan.Name, c.Key, c.Trigger)
		case nlwatch.Route:
			tell(routes.Name, c.Key)
			q.Enqueue(routes.Name, c.Key, c.Trigger)
		case nlwatch.FDB:
			tell(fdb.Name, c.Key)
			q.Enqueue(fdb.Name, c.Key, c.Trigger)
		case nlwatch.Neigh:
			tell(fdb.Name, c.Key)
			if c.MAC != "" {
				q.Enqueue(fdb.Name, c.MAC, c.Trigger)
			}
			if ip, err := netip.ParseAddr(c.Key); err == nil {
				for _, k := range neighKeys(ip) {
					q.Enqueue(fdb.Name, k, c.Trigger)
				}
			}
		}
	}
}

// route maps a state change to the keys of every controller it concerns and
// logs the changes an operator wants to see.
func (a *App) route(ev state.Event) {
	switch ev.Kind {
	case state.KindLease:
		a.checkOwnLease(ev)
	case state.KindLink:
		a.logLink(ev)
	case state.KindSynced:
		if a.store.Synced("docker") && a.store.Synced("etcd") {
			a.once.Do(func() { close(a.synced) })
		}
	case state.KindUnderlay:
		// The policy's facts changed: which local networks may have
		// forwarding rules may have too (App.registered).
		a.mgr.Enqueue(forwarding.Name, forwarding.Key, ev.Trigger)
	}
	select {
	case <-a.synced:
	default:
		// Before both sources are listed no worker runs, and the start
		// resync queues every key from the complete snapshot: mapping each
		// of the first listing's 10,000 events to keys would be work thrown
		// away.
		return
	}
	for _, c := range a.ctrls {
		for _, k := range c.KeysFor(ev) {
			a.mgr.Enqueue(c.Name(), k, ev.Trigger)
		}
	}
}

// checkOwnLease warns when flanneld published this host's VTEP under another
// PublicIP than the one we publish (flanneld run with --public-ip, e.g.
// behind NAT): peers would then send our networks' traffic to the wrong
// address. The fix is FLANNELD_PUBLIC_IP set to flanneld's --public-ip.
func (a *App) checkOwnLease(ev state.Event) {
	l, ok := ev.New.(state.Lease)
	link := a.store.Link()
	if !ok || !l.IsVXLAN() || !link.Present || l.VtepMAC.String() != link.MAC.String() {
		return
	}
	ours := a.cfg.PublicIP
	if !ours.IsValid() {
		ours = link.Local
	}
	if l.PublicIP == ours {
		return
	}
	a.mismatchMu.Lock()
	seen := a.mismatch[l.PublicIP.String()+"/"+ours.String()]
	a.mismatch[l.PublicIP.String()+"/"+ours.String()] = true
	a.mismatchMu.Unlock()
	if !seen {
		a.log.Warn("flanneld publishes this host under another PublicIP than flannel-registrar: set FLANNELD_PUBLIC_IP to flanneld's --public-ip",
			"flannel_lease", l.Subnet.String(), "flannel_public_ip", l.PublicIP.String(), "registrar_public_ip", ours.String())
	}
}

func (a *App) logLink(ev state.Event) {
	nw, _ := ev.New.(state.Link)
	old, _ := ev.Old.(state.Link)
	switch {
	case nw.Present && (!old.Present || old.MAC.String() != nw.MAC.String()):
		a.log.Info("VXLAN device ready", "iface", nw.Name, "mac", nw.MAC.String(), "local", nw.Local.String(), "vni", nw.VNI, "mtu", nw.MTU, "up", nw.Up)
	case !nw.Present:
		a.log.Warn("waiting for the VXLAN device: nothing is published until flanneld creates it", "iface", a.cfg.VXLANIface)
	}
}

func (a *App) resyncAll(trigger string) {
	select {
	case <-a.synced:
	default:
		return // the manager resyncs everything when it starts
	}
	if err := a.mgr.Resync(context.Background(), trigger); err != nil {
		a.log.Warn("resync incomplete", "trigger", trigger, "error", err.Error())
	}
}

func (a *App) resyncOne(controller, trigger string) {
	select {
	case <-a.synced:
	default:
		return
	}
	if err := a.mgr.ResyncOne(context.Background(), controller, trigger); err != nil {
		a.log.Warn("resync incomplete", "controller", controller, "trigger", trigger, "error", err.Error())
	}
}
