package routes_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// coldStart fills the store with records of 12 VTEPs (5 each, sharing one
// gateway per VTEP) and 10 leases, and observes the device, as the daemon
// does before its manager runs. It returns the number of routes, neighbours
// and FDB entries wanted.
func coldStart(t *testing.T, x *host) (nRoutes, nNeigh, nFDB int) {
	t.Helper()
	for v := range 12 {
		for i := range 5 {
			x.putRecord(byte(10+v), fmt.Sprintf("net%d", i), fmt.Sprintf("198.18.%d.0/24", 10*v+i))
		}
	}
	for i := range 10 {
		x.putLease(byte(100+i), fmt.Sprintf("198.19.%d.0/24", i))
	}
	if err := x.mgr.Runner(vxlan.Name).ReconcileNow(context.Background(), iface, "test"); err != nil {
		t.Fatal(err)
	}
	return 60 + 10, 12 + 10, 12 + 10
}

// converged waits until the routes and fdb runners have ended their
// start-up pass with nothing queued.
func (x *host) converged(wantRoutes, wantFDB uint64) {
	x.t.Helper()
	testutil.Eventually(x.t, 10*time.Second, func() error {
		for name, want := range map[string]uint64{routes.Name: wantRoutes, fdb.Name: wantFDB} {
			r := x.mgr.Runner(name)
			if r.Len() != 0 || r.Stats().Reconciles < want {
				return errorf("%s runner: %d queued, %d reconciles", name, r.Len(), r.Stats().Reconciles)
			}
		}
		return nil
	})
}

// A cold start answers its first lookups from the start resync's dumps:
// with N routes, neighbours and FDB entries wanted, it writes each missing
// one exactly once, none of those already in place (an exact record route,
// a VTEP's neighbour and FDB entry), never a foreign route holding a wanted
// destination, and a resync afterwards writes nothing.
func TestColdStartWritesEachMissingObjectOnce(t *testing.T) {
	x := newHost(t, routes.Options{})
	nRoutes, nNeigh, nFDB := coldStart(t, x)
	// In place before the start: VTEP .10's shared gateway is its lowest
	// subnet's address, 198.18.0.0; its FDB entry; one of its routes.
	x.run("ip", "neigh", "add", "198.18.0.0", "lladdr", mac(10).String(), "dev", iface, "nud", "permanent")
	x.run("bridge", "fdb", "add", mac(10).String(), "dev", iface, "dst", peerIP(10).String(), "self", "permanent")
	x.run("ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.0", "dev", iface, "onlink", "proto", "76")
	// A foreign route holds a lease's destination: never overwritten.
	x.run("ip", "route", "add", "198.19.3.0/24", "via", "198.51.100.254", "proto", "static")
	foreign := x.run("ip", "-d", "route", "show", "proto", "static")

	w0 := x.h.WriteStats()
	x.start()
	x.converged(uint64(nRoutes), uint64(nFDB))
	r, n, f := triple(100, "198.19.0.0/24", "proto boot ")
	x.eventually(5*time.Second, x.present(ipRoute, r,
		fmt.Sprintf("unicast 198.18.114.0/24 via 198.18.110.0 dev %s proto 76 scope global onlink", iface)),
		x.present(ipNeigh, n, "198.18.110.0 lladdr "+mac(21).String()+" PERMANENT"),
		x.present(bridgeFDB, f, mac(21).String()+" dst "+peerIP(21).String()+" self permanent"))
	w := x.h.WriteStats()
	got := netlinkx.WriteStats{RouteReplace: w.RouteReplace - w0.RouteReplace, RouteDel: w.RouteDel - w0.RouteDel,
		NeighSet: w.NeighSet - w0.NeighSet, NeighDel: w.NeighDel - w0.NeighDel, FDBSet: w.FDBSet - w0.FDBSet, FDBDel: w.FDBDel - w0.FDBDel}
	want := netlinkx.WriteStats{RouteReplace: uint64(nRoutes - 2), NeighSet: uint64(nNeigh - 1), FDBSet: uint64(nFDB - 1)}
	if got != want {
		t.Errorf("cold start wrote %+v, want %+v (each missing object once)", got, want)
	}
	if after := x.run("ip", "-d", "route", "show", "proto", "static"); after != foreign {
		t.Errorf("foreign route changed:\nbefore:\n%s\nafter:\n%s", foreign, after)
	}

	w1 := x.h.WriteStats()
	if err := x.mgr.Resync(context.Background(), "resync"); err != nil {
		t.Fatal(err)
	}
	x.converged(uint64(2*nRoutes), uint64(2*nFDB))
	if w := x.h.WriteStats(); w != w1 {
		t.Errorf("resync after the cold start wrote: %+v -> %+v", w1, w)
	}
}

// What the start dump proved absent is forgotten when the kernel reports a
// change of it: a foreign route added to a wanted destination after the
// dump is seen by that destination's reconcile and never overwritten.
func TestColdStartDumpForgottenOnKernelChange(t *testing.T) {
	x := newHost(t, routes.Options{})
	coldStart(t, x)
	ctx := reconcile.WithStart(context.Background())
	if _, err := x.rt.Keys(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := x.fdb.Keys(ctx); err != nil {
		t.Fatal(err)
	}
	x.run("ip", "route", "add", "198.19.3.0/24", "via", "198.51.100.254", "proto", "static")
	x.run("ip", "neigh", "add", "198.19.4.0", "lladdr", mac(104).String(), "dev", iface, "nud", "permanent")
	x.run("bridge", "fdb", "add", mac(104).String(), "dev", iface, "dst", peerIP(104).String(), "self", "permanent")
	// What the netlink watcher tells the controllers (app.KernelChanges).
	x.rt.KernelChanged("198.19.3.0/24")
	x.fdb.KernelChanged("198.19.4.0")
	x.fdb.KernelChanged(mac(104).String())

	w0 := x.h.WriteStats()
	if err := x.rt.Reconcile(context.Background(), "198.19.3.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := x.fdb.Reconcile(context.Background(), mac(104).String()); err != nil {
		t.Fatal(err)
	}
	if w := x.h.WriteStats(); w != w0 {
		t.Errorf("reconciles of keys changed after the dump wrote %+v -> %+v: the dump's answer was used", w0, w)
	}
	if out := x.run("ip", "route", "show", "198.19.3.0/24"); out != "198.19.3.0/24 via 198.51.100.254 dev ul0 proto static \n" {
		t.Errorf("foreign route overwritten: %q", out)
	}
	// A key the dump proved absent and nothing changed is written once.
	if err := x.rt.Reconcile(context.Background(), "198.19.5.0/24"); err != nil {
		t.Fatal(err)
	}
	if w := x.h.WriteStats(); w.RouteReplace != w0.RouteReplace+1 {
		t.Errorf("route writes %d -> %d, want one", w0.RouteReplace, w.RouteReplace)
	}
}

func TestDropDumpForgetsEverything(t *testing.T) {
	var a reconcile.Absent[netip.Prefix]
	p, q := netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/24")
	a.Begin()
	a.Forget(q) // reported while the dump was read
	a.Set(map[netip.Prefix]struct{}{p: {}, q: {}})
	if a.Take(q) {
		t.Error("a key changed while the dump was read is taken as absent")
	}
	if !a.Take(p) || a.Take(p) {
		t.Error("an absent key is not answered exactly once")
	}
	a.Set(map[netip.Prefix]struct{}{p: {}})
	a.Drop()
	if a.Take(p) || a.Len() != 0 {
		t.Error("Drop kept a key")
	}
}
