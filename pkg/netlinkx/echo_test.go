package netlinkx_test

import (
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// The kernel's notification of our own write is recognised as its echo
// (once), another actor's change to the same object is not.
func TestOwnWritesEchoes(t *testing.T) {
	f := setup(t)
	routes := make(chan netlink.RouteUpdate, 16)
	neighs := make(chan netlink.NeighUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	ns := f.h.Namespace()
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	nextRoute := func() netlink.RouteUpdate {
		t.Helper()
		for {
			select {
			case u := <-routes:
				if netlinkx.Prefix(u.Dst) == subnet {
					return u
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no route notification")
			}
		}
	}
	if err := f.h.RouteReplace(f.tunnelRoute(subnet)); err != nil {
		t.Fatal(err)
	}
	u := nextRoute()
	if !f.h.OwnRouteEcho(u) {
		t.Error("our route write's notification not recognised as its echo")
	}
	if f.h.OwnRouteEcho(u) {
		t.Error("one write's echo recognised twice")
	}
	f.ns.Run(t, "ip", "route", "del", subnet.String())
	if u := nextRoute(); u.Type != unix.RTM_DELROUTE || f.h.OwnRouteEcho(u) {
		t.Errorf("a deletion by another actor taken for our echo (type %d)", u.Type)
	}

	n := &netlink.Neigh{LinkIndex: f.vx.Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		IP: subnet.Addr().AsSlice(), HardwareAddr: mac}
	if err := f.h.NeighSet(n); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-neighs:
		if !f.h.OwnNeighEcho(u) {
			t.Errorf("our neighbour write's notification %+v not recognised as its echo", u.Neigh)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no neighbour notification")
	}
	f.ns.Run(t, "ip", "neigh", "del", subnet.Addr().String(), "dev", "flannel.1")
	select {
	case u := <-neighs:
		if f.h.OwnNeighEcho(u) {
			t.Error("a neighbour deletion by another actor taken for our echo")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no neighbour notification")
	}
}
