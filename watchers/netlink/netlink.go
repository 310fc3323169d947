// Package netlink watches the kernel's link, route and neighbour
// notifications that concern the data plane and pokes the controllers, so
// drift is repaired within milliseconds instead of at the next resync:
//
//   - the VXLAN device added, changed or removed: the "vxlan" key;
//   - a route added, changed or deleted on the VXLAN device, or carrying our
//     protocol anywhere in the main table: the "routes" key of its
//     destination (which also converges HOST_GATEWAY_MAP/FLANNEL_ROUTES_EXTRA
//     routes to that destination);
//   - an FDB entry or neighbour added, changed or deleted on the VXLAN
//     device: the "fdb" key of its MAC; a deleted neighbour no longer
//     carries its MAC, so the keys come from Options.NeighKeys.
//
// Subscriptions are re-established with backoff when they break (socket
// errors, ENOBUFS when the kernel overflowed our buffer); notifications may
// have been lost then, so every (re)subscription calls Options.Resync.
package netlink

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// Controller names the watcher enqueues for.
const (
	VXLANController  = "vxlan"
	RoutesController = "routes"
	FDBController    = "fdb"
)

// Enqueuer queues a key of a controller (*reconcile.Manager satisfies it).
type Enqueuer interface {
	Enqueue(controller, key, trigger string)
}

// Options configure a Watcher.
type Options struct {
	Iface    string   // the VXLAN device, e.g. "flannel.1"
	Enqueuer Enqueuer // required
	// Resync is called after every successful (re)subscription: what
	// happened while unsubscribed is unknown. May be nil.
	Resync func()
	// NeighKeys returns the fdb keys concerned by neighbour ip on the device
	// (fdb.Controller.KeysForIP). May be nil: deleted neighbours are then
	// left to the resync.
	NeighKeys func(ip netip.Addr) []string
	// OnBroken reports a broken subscription and the delay before the next
	// attempt (the app logs it). May be nil.
	OnBroken func(err error, retryIn time.Duration)
	// OnError reports a non-fatal subscription error (the app logs it at
	// debug). May be nil.
	OnError func(err error)
	// MinBackoff and MaxBackoff bound the delay before re-subscribing
	// (defaults 100ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// ReceiveBuffer is each subscription socket's buffer (default 4 MiB;
	// forced past rmem_max, which needs CAP_NET_ADMIN).
	ReceiveBuffer int
}

// Stats are the watcher's counters.
type Stats struct {
	Subscriptions uint64 // successful (re)subscriptions
	Notifications uint64 // notifications received
	Enqueued      uint64 // keys enqueued
}

// Watcher turns netlink notifications into controller keys.
type Watcher struct {
	h    *netlinkx.Handle
	o    Options
	vxlx atomic.Int64 // the VXLAN device's index; 0 when absent

	subs, notes, enqueued atomic.Uint64
}

// New returns a watcher of h's namespace.
func New(h *netlinkx.Handle, o Options) *Watcher {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.ReceiveBuffer <= 0 {
		o.ReceiveBuffer = 4 << 20
	}
	return &Watcher{h: h, o: o}
}

// Stats returns the watcher's counters.
func (w *Watcher) Stats() Stats {
	return Stats{Subscriptions: w.subs.Load(), Notifications: w.notes.Load(), Enqueued: w.enqueued.Load()}
}

// Run watches until ctx is done; it returns only then, after every
// subscription goroutine has ended.
func (w *Watcher) Run(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = w.o.MinBackoff, w.o.MaxBackoff, 0
	b.Reset()
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		start := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > w.o.MaxBackoff {
			b.Reset() // it ran long enough: a break is news, not a loop
		}
		delay := b.NextBackOff()
		if w.o.OnBroken != nil {
			w.o.OnBroken(err, delay)
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// subscription is one set of link, route and neighbour subscriptions.
type subscription struct {
	done   chan struct{}
	links  chan vnl.LinkUpdate
	routes chan vnl.RouteUpdate
	neighs chan vnl.NeighUpdate
	errs   chan error
	live   []func() // drain functions of the subscriptions that started
}

// session subscribes and dispatches until a subscription breaks or ctx is
// done. It returns after the library's reader goroutines have ended.
func (w *Watcher) session(ctx context.Context) error {
	s, err := w.subscribe()
	defer s.stop()
	if err != nil {
		return err
	}
	w.subs.Add(1)
	w.learnIndex()
	w.enqueue(VXLANController, w.o.Iface, "netlink:subscribed")
	if w.o.Resync != nil {
		w.o.Resync()
	}
	last := errors.New("no error reported")
	closed := func(what string) error {
		select {
		case err := <-s.errs:
			last = err
		default:
		}
		return fmt.Errorf("%s subscription closed: %w", what, last)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.errs:
			// Fatal errors also close the subscription's channel; others
			// (an interrupted dump, a stray sender) are only worth a line.
			last = err
			if w.o.OnError != nil {
				w.o.OnError(err)
			}
		case u, ok := <-s.links:
			if !ok {
				return closed("link")
			}
			w.onLink(u)
		case u, ok := <-s.routes:
			if !ok {
				return closed("route")
			}
			w.onRoute(u)
		case u, ok := <-s.neighs:
			if !ok {
				return closed("neighbour")
			}
			w.onNeigh(u)
		}
	}
}

func (w *Watcher) subscribe() (*subscription, error) {
	ns := w.h.Namespace()
	s := &subscription{
		done:   make(chan struct{}),
		links:  make(chan vnl.LinkUpdate, 1024),
		routes: make(chan vnl.RouteUpdate, 1024),
		neighs: make(chan vnl.NeighUpdate, 1024),
		errs:   make(chan error, 16),
	}
	cb := func(err error) {
		select {
		case s.errs <- err:
		default:
		}
	}
	if err := vnl.LinkSubscribeWithOptions(s.links, s.done, vnl.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: cb,
		ReceiveBufferSize: w.o.ReceiveBuffer, ReceiveBufferForceSize: true}); err != nil {
		return s, fmt.Errorf("subscribe to links: %w", err)
	}
	s.live = append(s.live, drainer(s.links))
	if err := vnl.RouteSubscribeWithOptions(s.routes, s.done, vnl.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: cb,
		ReceiveBufferSize: w.o.ReceiveBuffer, ReceiveBufferForceSize: true}); err != nil {
		return s, fmt.Errorf("subscribe to routes: %w", err)
	}
	s.live = append(s.live, drainer(s.routes))
	if err := vnl.NeighSubscribeWithOptions(s.neighs, s.done, vnl.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: cb,
		ReceiveBufferSize: w.o.ReceiveBuffer, ReceiveBufferForceSize: true}); err != nil {
		return s, fmt.Errorf("subscribe to neighbours: %w", err)
	}
	s.live = append(s.live, drainer(s.neighs))
	return s, nil
}

// drainer returns a function that reads ch until the library closes it, so
// its reader goroutine, possibly blocked on a send, can end.
func drainer[T any](ch chan T) func() {
	return func() {
		for range ch {
		}
	}
}

// stop ends the subscriptions and waits for their reader goroutines: closing
// done closes the sockets, each reader then closes its channel.
func (s *subscription) stop() {
	close(s.done)
	for _, drain := range s.live {
		drain()
	}
}

func (w *Watcher) learnIndex() {
	l, err := w.h.LinkByName(w.o.Iface)
	if err != nil {
		w.vxlx.Store(0)
		return
	}
	w.vxlx.Store(int64(l.Attrs().Index))
}

func (w *Watcher) enqueue(controller, key, trigger string) {
	w.enqueued.Add(1)
	w.o.Enqueuer.Enqueue(controller, key, trigger)
}

func (w *Watcher) onLink(u vnl.LinkUpdate) {
	w.notes.Add(1)
	a := u.Attrs()
	idx := int64(a.Index)
	if a.Name != w.o.Iface && idx != w.vxlx.Load() {
		return
	}
	verb := "link-new"
	switch {
	case u.Header.Type == unix.RTM_DELLINK:
		verb = "link-del"
		w.vxlx.CompareAndSwap(idx, 0)
	case a.Name == w.o.Iface:
		w.vxlx.Store(idx)
	}
	w.enqueue(VXLANController, w.o.Iface, "netlink:"+verb+" "+w.o.Iface)
}

func (w *Watcher) onRoute(u vnl.RouteUpdate) {
	w.notes.Add(1)
	r := u.Route
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		return
	}
	vx := w.vxlx.Load()
	if r.Protocol != netlinkx.RouteProtocol && (vx == 0 || int64(r.LinkIndex) != vx) {
		return
	}
	dst := netlinkx.Prefix(r.Dst)
	if !dst.IsValid() || !dst.Addr().Is4() {
		return
	}
	verb := "route-new"
	if u.Type == unix.RTM_DELROUTE {
		verb = "route-del"
	}
	w.enqueue(RoutesController, dst.String(), "netlink:"+verb+" "+dst.String())
}

func (w *Watcher) onNeigh(u vnl.NeighUpdate) {
	w.notes.Add(1)
	n := u.Neigh
	vx := w.vxlx.Load()
	if vx == 0 || int64(n.LinkIndex) != vx {
		return
	}
	del := u.Type == unix.RTM_DELNEIGH
	switch n.Family {
	case unix.AF_BRIDGE:
		if len(n.HardwareAddr) != 6 {
			return
		}
		mac := n.HardwareAddr.String()
		verb := "fdb-new"
		if del {
			verb = "fdb-del"
		}
		w.enqueue(FDBController, mac, "netlink:"+verb+" "+mac)
	case unix.AF_INET:
		ip := netlinkx.Addr(n.IP)
		verb := "neigh-new"
		if del {
			verb = "neigh-del"
		}
		trigger := "netlink:" + verb + " " + ip.String()
		var keys []string
		if len(n.HardwareAddr) == 6 {
			keys = append(keys, n.HardwareAddr.String())
		}
		// The VTEP that wants the address must hear of it too: a deleted
		// neighbour has lost its MAC, a replaced one carries the wrong one.
		if w.o.NeighKeys != nil && ip.IsValid() {
			keys = append(keys, w.o.NeighKeys(ip)...)
		}
		for _, k := range keys {
			w.enqueue(FDBController, k, trigger)
		}
	}
}
