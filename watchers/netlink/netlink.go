// Package netlink watches the kernel's link, route and neighbour
// notifications that concern the data plane and reports each as a Change,
// so that the wiring can queue the controllers concerned and drift is
// repaired within milliseconds instead of at the next resync. It reports:
//
//   - the VXLAN device added, changed or removed (Link, keyed by its name);
//   - a route added, changed or deleted on the VXLAN device, or carrying our
//     protocol anywhere in the main table (Route, keyed by its destination);
//   - an FDB entry added, changed or deleted on the VXLAN device (FDB, keyed
//     by its MAC);
//   - a neighbour added, changed or deleted on the VXLAN device (Neigh,
//     keyed by its address, with its MAC when the kernel still names one: a
//     deleted neighbour has lost it).
//
// Subscriptions are re-established with backoff when they break (socket
// errors, ENOBUFS when the kernel overflowed our buffer); notifications may
// have been lost then, so every (re)subscription calls Options.Resync. It
// runs on a goroutine of its own, never the one reading notifications: a
// resync that takes seconds (it lists etcd, the kernel, Docker) must not
// stall them until the kernel drops some.
package netlink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/resubscribe"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// Object is the kind of kernel object a Change is about.
type Object int

// Objects.
const (
	Link  Object = iota + 1 // the VXLAN device; Key is its name
	Route                   // a route; Key is its destination prefix
	FDB                     // a bridge FDB entry; Key is its MAC
	Neigh                   // an IPv4 neighbour; Key is its address, MAC its lladdr if any
)

func (o Object) String() string {
	switch o {
	case Link:
		return "link"
	case Route:
		return "route"
	case FDB:
		return "fdb"
	case Neigh:
		return "neigh"
	}
	return fmt.Sprintf("object(%d)", int(o))
}

// Change is one kernel notification that concerns the data plane (or, with
// Trigger "netlink:subscribed", the VXLAN device after a new subscription).
type Change struct {
	Object  Object
	Key     string
	MAC     string // Neigh: the neighbour's lladdr, "" when the kernel names none
	Trigger string // e.g. "netlink:route-del 198.19.0.0/24"
}

// Options configure a Watcher.
type Options struct {
	Iface string // the VXLAN device, e.g. "flannel.1"
	// OnChange receives every change; required. It runs on the watcher's
	// goroutine, so it must not block for long.
	OnChange func(Change)
	// Resync is called after every successful (re)subscription: what
	// happened while unsubscribed is unknown. It runs on a goroutine of the
	// watcher's own, one call at a time; requests made while it runs lead
	// to one more call. It may block: notifications keep being read and
	// reported meanwhile. May be nil.
	Resync func()
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
	Reported      uint64 // changes reported
}

// Watcher turns netlink notifications into Changes.
type Watcher struct {
	h    *netlinkx.Handle
	o    Options
	vxlx atomic.Int64 // the VXLAN device's index; 0 when absent

	resync chan struct{} // a pending Resync request (buffer 1)

	subs, notes, reported atomic.Uint64
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
	return &Watcher{h: h, o: o, resync: make(chan struct{}, 1)}
}

// Stats returns the watcher's counters.
func (w *Watcher) Stats() Stats {
	return Stats{Subscriptions: w.subs.Load(), Notifications: w.notes.Load(), Reported: w.reported.Load()}
}

// Run watches until ctx is done; it returns only then, after every
// subscription goroutine and the Resync goroutine have ended.
func (w *Watcher) Run(ctx context.Context) error {
	if w.o.Resync != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { w.resyncLoop(ctx) })
	}
	resubscribe.Loop(ctx, w.o.MinBackoff, w.o.MaxBackoff, w.session, w.o.OnBroken)
	return nil
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
	w.h.ForgetEchoes() // what was written while unsubscribed has no echo to come
	w.learnIndex()
	w.report(Change{Object: Link, Key: w.o.Iface, Trigger: "netlink:subscribed"})
	select {
	case w.resync <- struct{}{}:
	default: // one is pending already; it runs after this subscription
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

// resyncLoop calls Options.Resync for each request until ctx is done.
func (w *Watcher) resyncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.resync:
			w.o.Resync()
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

func (w *Watcher) report(c Change) {
	w.reported.Add(1)
	w.o.OnChange(c)
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
	w.report(Change{Object: Link, Key: w.o.Iface, Trigger: "netlink:" + verb + " " + w.o.Iface})
}

func (w *Watcher) onRoute(u vnl.RouteUpdate) {
	w.notes.Add(1)
	if w.h.OwnRouteEcho(u) {
		return // our own write coming back: nothing changed that we do not know
	}
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
	w.report(Change{Object: Route, Key: dst.String(), Trigger: "netlink:" + verb + " " + dst.String()})
}

func (w *Watcher) onNeigh(u vnl.NeighUpdate) {
	w.notes.Add(1)
	if w.h.OwnNeighEcho(u) {
		return // our own write coming back
	}
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
		w.report(Change{Object: FDB, Key: mac, Trigger: "netlink:" + verb + " " + mac})
	case unix.AF_INET:
		ip := netlinkx.Addr(n.IP)
		verb := "neigh-new"
		if del {
			verb = "neigh-del"
		}
		if !ip.IsValid() {
			return
		}
		c := Change{Object: Neigh, Key: ip.String(), Trigger: "netlink:" + verb + " " + ip.String()}
		if len(n.HardwareAddr) == 6 {
			c.MAC = n.HardwareAddr.String()
		}
		w.report(c)
	}
}
