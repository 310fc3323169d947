package netlinkx_test

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// mainRoutes dumps the main table's routes, formatted, sorted.
func mainRoutes(t *testing.T, h *netlinkx.Handle) []string {
	t.Helper()
	rs, err := h.Routes(&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, netlinkx.FormatRoute(r, "")+" scope "+r.Scope.String()+" type "+strconv.Itoa(r.Type))
	}
	slices.Sort(out)
	return out
}

// TestRouteWriteAllAsTheLibrary writes the same routes one at a time
// through the library (RouteReplace, RouteDel) on one host and in one
// batch on another: both tables end the same, route for route. The shapes
// are every one the controllers write: a lease's and a record's tunnel
// route, a configured gateway route without device, one with a metric, a
// local bridge's connected route with its source; and one the batch does
// not encode (an MTU metric), written on its own in its place.
func TestRouteWriteAllAsTheLibrary(t *testing.T) {
	one, batch := setup(t), setup(t)
	ws := func(f fixture) []netlinkx.RouteWrite {
		tunnel := func(p, gw string, proto netlink.RouteProtocol) netlink.Route {
			return netlink.Route{LinkIndex: f.vx.Index, Dst: netlinkx.IPNet(netip.MustParsePrefix(p)),
				Gw: netip.MustParseAddr(gw).AsSlice(), Flags: unix.RTNH_F_ONLINK, Protocol: proto}
		}
		mtu := tunnel("10.9.0.0/24", "10.9.0.0", netlinkx.RouteProtocol)
		mtu.MTU = 1400
		return []netlinkx.RouteWrite{
			{Route: tunnel("10.1.0.0/24", "10.1.0.0", netlinkx.FlannelRouteProtocol)},
			{Route: tunnel("10.2.0.0/24", "10.2.0.0", netlinkx.RouteProtocol)},
			{Route: tunnel("10.2.5.0/24", "10.2.0.0", netlinkx.RouteProtocol)},
			{Route: mtu},
			{Route: netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix("10.3.0.0/16")), Gw: peer.AsSlice(), Protocol: netlinkx.RouteProtocol}},
			{Route: netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix("10.4.0.0/16")), Gw: peer.AsSlice(), Protocol: netlinkx.RouteProtocol, Priority: 50}},
			{Route: netlink.Route{LinkIndex: f.vx.Index, Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.0.0/24")), Scope: netlink.SCOPE_LINK,
				Src: local.AsSlice(), Protocol: netlinkx.KernelRouteProtocol}},
			// Replaced in place, then one deleted, one delete of nothing.
			{Route: tunnel("10.2.0.0/24", "10.2.0.0", netlinkx.FlannelRouteProtocol)},
			{Del: true, Route: tunnel("10.2.5.0/24", "10.2.0.0", netlinkx.RouteProtocol)},
			{Del: true, Route: tunnel("10.7.0.0/24", "10.7.0.0", netlinkx.RouteProtocol)},
		}
	}
	before := mainRoutes(t, one.h)
	for _, w := range ws(one) {
		var err error
		if w.Del {
			err = one.h.RouteDel(&w.Route)
		} else {
			err = one.h.RouteReplace(&w.Route)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, err := range batch.h.RouteWriteAll(ws(batch)) {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	want, got := mainRoutes(t, one.h), mainRoutes(t, batch.h)
	if !slices.Equal(got, want) {
		t.Errorf("batch wrote\n%s\nthe library wrote\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Six destinations written (one of the seven deleted again).
	if len(want) != len(before)+6 {
		t.Errorf("%d routes after the writes, want 6 more than the %d before:\n%s", len(want), len(before), strings.Join(want, "\n"))
	}
	if s := batch.h.WriteStats(); s.RouteReplace != 8 || s.RouteDel != 2 {
		t.Errorf("write counters %v, want 8 replaces and 2 deletes", s)
	}
}

// TestRouteWriteAllErrorsPerWrite: a write the kernel refuses fails alone,
// with its route named; the writes around it, in the same system call, are
// made; more writes than one call carries all land.
func TestRouteWriteAllErrorsPerWrite(t *testing.T) {
	f := setup(t)
	var ws []netlinkx.RouteWrite
	for i := range 600 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(20 + i/256), byte(i), 0}), 24)
		ws = append(ws, netlinkx.RouteWrite{Route: *f.tunnelRoute(p)})
	}
	// No such device: refused.
	bad := *f.tunnelRoute(netip.MustParsePrefix("10.99.0.0/24"))
	bad.LinkIndex = 9999
	ws = slices.Insert(ws, 300, netlinkx.RouteWrite{Route: bad})
	errs := f.h.RouteWriteAll(ws)
	for i, err := range errs {
		switch {
		case i == 300 && err == nil:
			t.Errorf("write %d (dev 9999): no error", i)
		case i == 300 && !strings.Contains(err.Error(), "10.99.0.0/24"):
			t.Errorf("write %d: error %q does not name the route", i, err)
		case i != 300 && err != nil:
			t.Errorf("write %d: %v", i, err)
		}
	}
	rs, err := f.h.Routes(&netlink.Route{LinkIndex: f.vx.Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 600 {
		t.Errorf("%d routes on the device, want 600", len(rs))
	}
}

// TestRouteWriteAllEchoes: the kernel's notifications of a batch's writes
// are known as our own, as a single write's are.
func TestRouteWriteAllEchoes(t *testing.T) {
	f := setup(t)
	r := *f.tunnelRoute(subnet)
	if errs := f.h.RouteWriteAll([]netlinkx.RouteWrite{{Route: r}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if !f.h.OwnRouteEcho(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: r}) {
		t.Error("the batch's write is not expected back as our own")
	}
	if f.h.OwnRouteEcho(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: r}) {
		t.Error("one write is expected back twice")
	}
	f.h.Close()
	if errs := f.h.RouteWriteAll([]netlinkx.RouteWrite{{Route: r}}); errs[0] == nil {
		t.Error("a write after Close did not fail")
	}
}

// neighTable dumps the device's neighbours and FDB entries, formatted, sorted.
func neighTable(t *testing.T, f fixture) []string {
	t.Helper()
	ns, err := f.h.Neighs(f.vx.Index)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := f.h.FDB(f.vx.Index)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range append(ns, fdb...) {
		out = append(out, netlinkx.FormatNeigh(n, "")+" state "+strconv.Itoa(n.State)+" flags "+strconv.Itoa(n.Flags))
	}
	slices.Sort(out)
	return out
}

// TestNeighSetAllAsTheLibrary sets the same neighbours and FDB entries one
// at a time through the library (NeighSet) on one host and in one batch on
// another: both devices end the same; a replaced entry takes its new value;
// an entry on a device that does not exist fails alone, named.
func TestNeighSetAllAsTheLibrary(t *testing.T) {
	one, batch := setup(t), setup(t)
	entries := func(f fixture) []netlink.Neigh {
		m2 := net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, 3}
		return []netlink.Neigh{
			{LinkIndex: f.vx.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: peer.AsSlice(), HardwareAddr: mac},
			{LinkIndex: f.vx.Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: subnet.Addr().AsSlice(), HardwareAddr: mac},
			{LinkIndex: f.vx.Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: netip.MustParseAddr("198.18.3.0").AsSlice(), HardwareAddr: mac},
			// Replaced: the neighbour moves to another MAC, the FDB entry to another destination.
			{LinkIndex: f.vx.Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: netip.MustParseAddr("198.18.3.0").AsSlice(), HardwareAddr: m2},
			{LinkIndex: f.vx.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: local.AsSlice(), HardwareAddr: mac},
		}
	}
	for _, n := range entries(one) {
		if err := one.h.NeighSet(&n); err != nil {
			t.Fatal(err)
		}
	}
	bad := netlink.Neigh{LinkIndex: 9999, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: peer.AsSlice(), HardwareAddr: mac}
	ns := slices.Insert(entries(batch), 2, bad)
	for i, err := range batch.h.NeighSetAll(ns) {
		switch {
		case i == 2 && (err == nil || !strings.Contains(err.Error(), "neighbour "+peer.String())):
			t.Errorf("entry on device 9999: error %v, want one naming neighbour %s", err, peer)
		case i != 2 && err != nil:
			t.Errorf("entry %d: %v", i, err)
		}
	}
	want, got := neighTable(t, one), neighTable(t, batch)
	if !slices.Equal(got, want) {
		t.Errorf("batch set\n%s\nthe library set\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(want) < 3 {
		t.Errorf("%d entries, want at least the 2 neighbours and the FDB entry:\n%s", len(want), strings.Join(want, "\n"))
	}
	if s := batch.h.WriteStats(); s.NeighSet != 4 || s.FDBSet != 2 {
		t.Errorf("write counters %+v, want 4 neighbour and 2 FDB sets", s)
	}
	for _, n := range entries(batch)[:3] {
		if !batch.h.OwnNeighEcho(netlink.NeighUpdate{Type: unix.RTM_NEWNEIGH, Neigh: n}) {
			t.Errorf("the batch's set of %s is not expected back as our own", netlinkx.FormatNeigh(n, ""))
		}
	}
}
