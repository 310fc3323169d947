package routes_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
)

// The records' route shape: every record subnet behind one VTEP is routed
// via one gateway, the network address of that VTEP's lowest record subnet,
// with one neighbour for it; a flanneld lease (here of the same VTEP) keeps
// flannel's exact shape. A converged pass writes nothing.
func TestRecordsShareOneGatewayPerVTEP(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	a := x.putRecord(2, "a", "198.18.2.0/24")
	x.putRecord(2, "b", "198.18.3.0/24")
	x.putRecord(2, "c", "198.18.4.0/25")
	x.putLease(2, "198.18.9.0/24")
	x.putRecord(3, "a", "198.18.5.0/24")

	x.eventually(5*time.Second,
		x.present(ipRoute,
			"unicast 198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.3.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.4.0/25 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.5.0/24 via 198.18.5.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.9.0/24 via 198.18.9.0 dev flannel.1 proto boot scope global onlink"),
		x.present(ipNeigh, "198.18.2.0 lladdr "+mac(2).String()+" PERMANENT", "198.18.9.0 lladdr "+mac(2).String()+" PERMANENT",
			"198.18.5.0 lladdr "+mac(3).String()+" PERMANENT"),
		x.gone(ipNeigh, "198.18.3.0 ", "198.18.4.0 "),
		x.present(bridgeFDB, mac(2).String()+" dst 198.51.100.2 self permanent", mac(3).String()+" dst 198.51.100.3 self permanent"))

	w0 := x.h.Writes()
	x.once()
	if w := x.h.Writes() - w0; w != 0 {
		t.Errorf("a converged pass made %d writes, want 0", w)
	}

	// Removing the subnet that defines the shared gateway moves it to the
	// next one: routes replaced, the new neighbour set, the old one gone;
	// the lease's entries stay as they are.
	x.store.DeleteNetwork(a, "test:delete "+a)
	x.eventually(5*time.Second,
		x.present(ipRoute,
			"unicast 198.18.3.0/24 via 198.18.3.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.4.0/25 via 198.18.3.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.9.0/24 via 198.18.9.0 dev flannel.1 proto boot scope global onlink"),
		x.gone(ipRoute, "198.18.2.0/24"),
		x.present(ipNeigh, "198.18.3.0 lladdr "+mac(2).String()+" PERMANENT", "198.18.9.0 lladdr "+mac(2).String()+" PERMANENT"),
		x.gone(ipNeigh, "198.18.2.0 "))
}

// A deleted route, a deleted or wrong shared neighbour and a deleted FDB
// entry are repaired from the netlink notifications, within a second.
func TestSharedShapeSelfHealing(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	x.putRecord(2, "a", "198.18.2.0/24")
	x.putRecord(2, "b", "198.18.3.0/24")
	route := "unicast 198.18.3.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink"
	neigh := "198.18.2.0 lladdr " + mac(2).String() + " PERMANENT"
	fdbEntry := mac(2).String() + " dst 198.51.100.2 self permanent"
	x.eventually(5*time.Second, x.present(ipRoute, route), x.present(ipNeigh, neigh), x.present(bridgeFDB, fdbEntry))

	x.run("ip", "route", "del", "198.18.3.0/24")
	x.eventually(time.Second, x.present(ipRoute, route))
	x.run("ip", "neigh", "del", "198.18.2.0", "dev", iface)
	x.eventually(time.Second, x.present(ipNeigh, neigh))
	x.run("ip", "neigh", "replace", "198.18.2.0", "lladdr", "aa:bb:cc:00:00:99", "dev", iface, "nud", "permanent")
	x.eventually(time.Second, x.present(ipNeigh, neigh))
	x.run("bridge", "fdb", "del", mac(2).String(), "dev", iface, "self")
	x.eventually(time.Second, x.present(bridgeFDB, fdbEntry))
}

// Migration on a running host: routes of the per-subnet shape (ours, via
// the subnet's own address) are replaced in place, never deleted first, and
// the per-subnet neighbours are deleted only once no route of ours uses
// them, whatever order the controllers run in.
func TestMigrationFromPerSubnetShape(t *testing.T) {
	x := newHost(t, routes.Options{})
	for _, s := range []string{"198.18.2.0", "198.18.3.0"} {
		x.run("ip", "route", "add", s+"/24", "via", s, "dev", iface, "onlink", "proto", "76")
		x.run("ip", "neigh", "add", s, "lladdr", mac(2).String(), "dev", iface, "nud", "permanent")
	}
	x.putRecord(2, "a", "198.18.2.0/24")
	x.putRecord(2, "b", "198.18.3.0/24")
	ctx, rec := reconcile.WithRecorder(context.Background())
	if err := x.vx.Reconcile(ctx, iface); err != nil {
		t.Fatal(err)
	}
	if _, err := x.fdb.Keys(ctx); err != nil { // the resync's dump: nominates the old neighbours
		t.Fatal(err)
	}

	// fdb first: the old neighbour is still used by the old route, so it stays.
	err := x.fdb.Reconcile(ctx, mac(2).String())
	var rq *reconcile.RequeueError
	if !errors.As(err, &rq) {
		t.Fatalf("fdb reconcile = %v, want a requeue while a route uses the old neighbour", err)
	}
	if err := x.has(ipNeigh, false, "198.18.3.0 lladdr "+mac(2).String()); err != nil {
		t.Fatalf("neighbour deleted while its route was not replaced yet: %v", err)
	}
	for _, k := range []string{"198.18.2.0/24", "198.18.3.0/24"} {
		if err := x.rt.Reconcile(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.fdb.Reconcile(ctx, mac(2).String()); err != nil {
		t.Fatal(err)
	}
	x.eventually(time.Second,
		x.present(ipRoute, "unicast 198.18.3.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink",
			"unicast 198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink"),
		x.present(ipNeigh, "198.18.2.0 lladdr "+mac(2).String()+" PERMANENT"),
		x.gone(ipNeigh, "198.18.3.0 "))
	got := rec.Changes()
	if slices.ContainsFunc(got, func(c string) bool { return len(c) > 10 && c[:10] == "route del " }) {
		t.Errorf("migration deleted a route: %q", got)
	}
	if !slices.Contains(got, "route add 198.18.3.0/24 via 198.18.2.0 dev flannel.1 proto 76 onlink") {
		t.Errorf("recorded %q, want the old route replaced by the shared-gateway one", got)
	}
}

// The VTEP's shared gateway moves (its lowest subnet went): whatever order
// the controllers run in, a route moves only once the new gateway's
// neighbour is in place, and the old neighbour goes only once no route uses
// it.
func TestGatewayMoveKeepsANeighbour(t *testing.T) {
	x := newHost(t, routes.Options{})
	a := x.putRecord(2, "a", "198.18.2.0/24")
	x.putRecord(2, "b", "198.18.3.0/24")
	x.once()
	old := "unicast 198.18.3.0/24 via 198.18.2.0 dev flannel.1 proto 76 scope global onlink"
	if err := x.has(ipRoute, false, old); err != nil {
		t.Fatal(err)
	}
	x.store.DeleteNetwork(a, "test:delete "+a)
	ctx := context.Background()
	var rq *reconcile.RequeueError

	// routes first: the new gateway has no neighbour yet, the route stays.
	if err := x.rt.Reconcile(ctx, "198.18.3.0/24"); !errors.As(err, &rq) {
		t.Fatalf("routes reconcile = %v, want a requeue until the new gateway's neighbour exists", err)
	}
	if err := x.has(ipRoute, false, old); err != nil {
		t.Fatalf("route moved before its new gateway's neighbour existed: %v", err)
	}
	// fdb: the new neighbour is set, the old one stays while a route uses it.
	if err := x.fdb.Reconcile(ctx, mac(2).String()); !errors.As(err, &rq) {
		t.Fatalf("fdb reconcile = %v, want a requeue while a route uses the old gateway", err)
	}
	if err := x.has(ipNeigh, false, "198.18.2.0 lladdr "+mac(2).String(), "198.18.3.0 lladdr "+mac(2).String()); err != nil {
		t.Fatal(err)
	}
	if err := x.rt.Reconcile(ctx, "198.18.3.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := x.fdb.Reconcile(ctx, mac(2).String()); err != nil {
		t.Fatal(err)
	}
	if err := x.rt.Reconcile(ctx, "198.18.2.0/24"); err != nil {
		t.Fatal(err)
	}
	x.eventually(time.Second,
		x.present(ipRoute, "unicast 198.18.3.0/24 via 198.18.3.0 dev flannel.1 proto 76 scope global onlink"),
		x.gone(ipRoute, "198.18.2.0/24"),
		x.present(ipNeigh, "198.18.3.0 lladdr "+mac(2).String()+" PERMANENT"),
		x.gone(ipNeigh, "198.18.2.0 "))
}
