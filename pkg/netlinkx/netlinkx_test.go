package netlinkx_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

var (
	local  = netip.MustParseAddr("198.51.100.1")
	peer   = netip.MustParseAddr("198.51.100.2")
	subnet = netip.MustParsePrefix("198.18.2.0/24")
	mac    = net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, 2}
)

type fixture struct {
	ns *testutil.Netns
	h  *netlinkx.Handle
	vx *netlink.Vxlan
}

func setup(t *testing.T) fixture {
	ns := testutil.NewNetns(t, "frdp-nlx")
	ul := netlinkxtest.Underlay(t, ns, local)
	vx := netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	return fixture{ns: ns, h: netlinkxtest.Handle(t, ns), vx: vx}
}

func (f fixture) tunnelRoute(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: f.vx.Index, Dst: netlinkx.IPNet(p), Gw: p.Addr().AsSlice(),
		Flags: unix.RTNH_F_ONLINK, Protocol: netlinkx.RouteProtocol,
	}
}

func TestRoutesTo(t *testing.T) {
	f := setup(t)
	if rs, err := f.h.RoutesTo(subnet); err != nil || len(rs) != 0 {
		t.Fatalf("RoutesTo before any route = %v, %v; want none", rs, err)
	}
	if err := f.h.RouteReplace(f.tunnelRoute(subnet)); err != nil {
		t.Fatal(err)
	}
	rs, err := f.h.RoutesTo(subnet)
	if err != nil || len(rs) != 1 {
		t.Fatalf("RoutesTo = %v, %v; want our route", rs, err)
	}
	r := rs[0]
	if r.Protocol != netlinkx.RouteProtocol || r.LinkIndex != f.vx.Index || r.Flags&unix.RTNH_F_ONLINK == 0 ||
		!r.Gw.Equal(subnet.Addr().AsSlice()) || netlinkx.Prefix(r.Dst) != subnet {
		t.Errorf("RoutesTo = %+v, want %s", r, netlinkx.FormatRoute(*f.tunnelRoute(subnet), ""))
	}

	if n := f.h.RouteDumpFallbacks(); n != 0 {
		t.Errorf("%d dump fallbacks for plain lookups, want 0", n)
	}
	// A more specific route answers the lookup: the dump fallback still finds ours.
	host := netip.MustParsePrefix("198.18.2.0/32")
	if err := f.h.RouteReplace(f.tunnelRoute(host)); err != nil {
		t.Fatal(err)
	}
	if rs, err := f.h.RoutesTo(subnet); err != nil || len(rs) != 1 || netlinkx.Prefix(rs[0].Dst) != subnet {
		t.Fatalf("RoutesTo under a /32 = %v, %v; want the /24", rs, err)
	}
	if n := f.h.RouteDumpFallbacks(); n != 1 {
		t.Errorf("%d dump fallbacks, want 1 (the shadowed /24)", n)
	}
	// A less specific route answers the lookup for a subnet that has none.
	other := netip.MustParsePrefix("198.18.2.128/25")
	if rs, err := f.h.RoutesTo(other); err != nil || len(rs) != 0 {
		t.Fatalf("RoutesTo(%s) = %v, %v; want none", other, rs, err)
	}
	if err := f.h.RouteDel(f.tunnelRoute(subnet)); err != nil {
		t.Fatal(err)
	}
	if rs, err := f.h.RoutesTo(subnet); err != nil || len(rs) != 0 {
		t.Fatalf("RoutesTo after delete = %v, %v; want none", rs, err)
	}
}

func TestDeleteAbsentIsDone(t *testing.T) {
	f := setup(t)
	before := f.h.WriteStats()
	if err := f.h.RouteDel(f.tunnelRoute(subnet)); err != nil {
		t.Errorf("RouteDel of a missing route: %v", err)
	}
	n := &netlink.Neigh{LinkIndex: f.vx.Index, IP: subnet.Addr().AsSlice(), HardwareAddr: mac, State: netlink.NUD_PERMANENT}
	if err := f.h.NeighDel(n); err != nil {
		t.Errorf("NeighDel of a missing neighbour: %v", err)
	}
	fdb := &netlink.Neigh{LinkIndex: f.vx.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: peer.AsSlice(), HardwareAddr: mac}
	if err := f.h.NeighDel(fdb); err != nil {
		t.Errorf("NeighDel of a missing fdb entry: %v", err)
	}
	got := f.h.WriteStats()
	want := netlinkx.WriteStats{RouteDel: before.RouteDel + 1, NeighDel: before.NeighDel + 1, FDBDel: before.FDBDel + 1}
	if got != want {
		t.Errorf("write stats = %+v, want %+v", got, want)
	}
	if _, err := f.h.LinkByName("nope0"); !netlinkx.IsNotFound(err) {
		t.Errorf("LinkByName(missing): err %v, want not found", err)
	}
}

func TestPointReads(t *testing.T) {
	f := setup(t)
	if n, err := f.h.Neigh(f.vx.Index, subnet.Addr()); err != nil || n != nil {
		t.Fatalf("Neigh before set = %v, %v; want none", n, err)
	}
	if n, err := f.h.FDBEntry(f.vx.Index, mac); err != nil || n != nil {
		t.Fatalf("FDBEntry before set = %v, %v; want none", n, err)
	}
	if err := f.h.NeighSet(&netlink.Neigh{LinkIndex: f.vx.Index, IP: subnet.Addr().AsSlice(), HardwareAddr: mac,
		State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.NeighSet(&netlink.Neigh{LinkIndex: f.vx.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: peer.AsSlice(), HardwareAddr: mac}); err != nil {
		t.Fatal(err)
	}
	n, err := f.h.Neigh(f.vx.Index, subnet.Addr())
	if err != nil || n == nil || n.HardwareAddr.String() != mac.String() || n.State != netlink.NUD_PERMANENT {
		t.Fatalf("Neigh = %+v, %v; want %s permanent", n, err, mac)
	}
	e, err := f.h.FDBEntry(f.vx.Index, mac)
	if err != nil || e == nil || !e.IP.Equal(peer.AsSlice()) || e.State&netlink.NUD_PERMANENT == 0 || e.Flags&netlink.NTF_SELF == 0 {
		t.Fatalf("FDBEntry = %+v, %v; want dst %s self permanent", e, err, peer)
	}
	// The dumps agree with the point reads.
	ns, err := f.h.Neighs(f.vx.Index)
	if err != nil || len(ns) != 1 {
		t.Fatalf("Neighs = %v, %v", ns, err)
	}
	fdb, err := f.h.FDB(f.vx.Index)
	if err != nil || !hasFDB(fdb, mac, peer) {
		t.Fatalf("FDB = %v, %v; want %s dst %s", fdb, err, mac, peer)
	}
	out := f.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1")
	if !strings.Contains(out, fmt.Sprintf("%s dst %s self permanent", mac, peer)) {
		t.Errorf("bridge fdb show:\n%s", out)
	}
	if got := f.h.WriteStats(); got.NeighSet != 1 || got.FDBSet != 1 || got.Total() != 2 {
		t.Errorf("write stats = %+v", got)
	}
}

func hasFDB(ns []netlink.Neigh, mac net.HardwareAddr, dst netip.Addr) bool {
	for _, n := range ns {
		if n.HardwareAddr.String() == mac.String() && n.IP.Equal(dst.AsSlice()) {
			return true
		}
	}
	return false
}

func TestFormatRoute(t *testing.T) {
	r := netlink.Route{Dst: netlinkx.IPNet(subnet), Gw: subnet.Addr().AsSlice(), Flags: unix.RTNH_F_ONLINK, Protocol: netlinkx.RouteProtocol}
	if got, want := netlinkx.FormatRoute(r, "flannel.1"), "198.18.2.0/24 via 198.18.2.0 dev flannel.1 proto 76 onlink"; got != want {
		t.Errorf("FormatRoute = %q, want %q", got, want)
	}
}

func TestIsNotFound(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{unix.ESRCH, true},
		{fmt.Errorf("delete: %w", unix.ENOENT), true},
		{unix.ENODEV, true},
		{netlink.LinkNotFoundError{}, true},
		{unix.EEXIST, false},
		{unix.EPERM, false},
	} {
		if got := netlinkx.IsNotFound(tc.err); got != tc.want {
			t.Errorf("IsNotFound(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !netlinkx.IsExist(fmt.Errorf("x: %w", unix.EEXIST)) {
		t.Error("IsExist(EEXIST) = false")
	}
}

// Writes from many goroutines at once all land, each once, through the
// handle's write sockets, and each errs on its own.
func TestConcurrentWrites(t *testing.T) {
	f := setup(t)
	const n = 400
	errs := make(chan error, n+1)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(10 + i/256), byte(i)}), 32)
			errs <- f.h.RouteReplace(f.tunnelRoute(p))
		})
	}
	// A write the kernel refuses (no such device) fails alone.
	wg.Go(func() {
		bad := f.tunnelRoute(netip.MustParsePrefix("198.18.9.0/24"))
		bad.LinkIndex = 9999
		if err := f.h.RouteReplace(bad); err == nil {
			errs <- fmt.Errorf("a route on device 9999 was accepted")
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rs, err := f.h.Routes(&netlink.Route{LinkIndex: f.vx.Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, r := range rs {
		if r.Protocol == netlinkx.RouteProtocol {
			got++
		}
	}
	if got != n {
		t.Fatalf("%d of our routes on flannel.1 after %d concurrent writes", got, n)
	}
	if w := f.h.WriteStats().RouteReplace; w != n+1 {
		t.Fatalf("%d route writes counted, want %d", w, n+1)
	}
}

// A write after Close fails at once: it neither waits for a write socket
// nor, like a closed vishvananda handle, opens one in the calling thread's
// namespace (the call runs inside a throwaway namespace, checked after).
func TestWriteAfterClose(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-nlx")
	h, err := netlinkx.New(ns.Handle, ns.NS)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	caller := testutil.NewNetns(t, "frdp-nlx")
	done := make(chan error, 1)
	go func() {
		done <- caller.Do(func() error {
			if err := h.RouteReplace(&netlink.Route{Dst: netlinkx.IPNet(subnet), LinkIndex: 1}); err == nil {
				return fmt.Errorf("a write after Close succeeded")
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write after Close still waits after 5 s")
	}
	if rs, err := caller.Handle.RouteList(nil, unix.AF_INET); err != nil || len(rs) != 0 {
		t.Fatalf("routes in the caller's namespace after the write: %v, %v", rs, err)
	}
}
