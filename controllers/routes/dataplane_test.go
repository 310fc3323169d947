package routes_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// A remote record gets exactly flannel's triple (our route protocol), a
// remote flanneld lease exactly flannel's own; removing the record removes
// all three and leaves the lease's.
func TestRemoteRecordExactStateAndRemoval(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	rec := x.putRecord(2, "app", "198.18.2.0/24")
	x.putLease(3, "198.18.3.0/24")

	r2, n2, f2 := triple(2, "198.18.2.0/24", "proto 76 ")
	r3, n3, f3 := triple(3, "198.18.3.0/24", "proto boot ")
	x.eventually(5*time.Second, x.present(ipRoute, r2, r3), x.present(ipNeigh, n2, n3), x.present(bridgeFDB, f2, f3))

	x.store.DeleteNetwork(rec, "test:delete "+rec)
	x.eventually(5*time.Second, x.gone(ipRoute, "198.18.2.0/24"), x.gone(ipNeigh, "198.18.2.0 "), x.gone(bridgeFDB, mac(2).String()))
	for _, check := range []func() error{x.present(ipRoute, r3), x.present(ipNeigh, n3), x.present(bridgeFDB, f3)} {
		if err := check(); err != nil {
			t.Error(err)
		}
	}
}

// Deleting the route, the neighbour or the FDB entry by hand is repaired
// from the netlink notification, well before any resync (there is none here).
func TestHandDeletionsRepairedWithinASecond(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	x.putRecord(2, "app", "198.18.2.0/24")
	r2, n2, f2 := triple(2, "198.18.2.0/24", "proto 76 ")
	x.eventually(5*time.Second, x.present(ipRoute, r2), x.present(ipNeigh, n2), x.present(bridgeFDB, f2))

	x.run("ip", "route", "del", "198.18.2.0/24")
	x.eventually(time.Second, x.present(ipRoute, r2))
	x.run("ip", "neigh", "del", "198.18.2.0", "dev", iface)
	x.eventually(time.Second, x.present(ipNeigh, n2))
	x.run("bridge", "fdb", "del", mac(2).String(), "dev", iface, "self")
	x.eventually(time.Second, x.present(bridgeFDB, f2))
	// A wrong value is repaired too.
	x.run("ip", "neigh", "replace", "198.18.2.0", "lladdr", "aa:bb:cc:00:00:99", "dev", iface, "nud", "permanent")
	x.eventually(time.Second, x.present(ipNeigh, n2))
}

// flannel.1 deleted and recreated with a new MAC: the store's link follows
// (vxlan controller), the link event maps to every fdb and routes key, and
// the peers' entries are programmed again on the new device. A peer whose
// device was recreated (new MAC) loses its old FDB entry.
func TestDeviceRecreatedWithNewMAC(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	x.putRecord(2, "app", "198.18.2.0/24")
	x.putLease(3, "198.18.3.0/24")
	r2, n2, f2 := triple(2, "198.18.2.0/24", "proto 76 ")
	r3, n3, f3 := triple(3, "198.18.3.0/24", "proto boot ")
	x.eventually(5*time.Second, x.present(ipRoute, r2, r3), x.present(ipNeigh, n2, n3), x.present(bridgeFDB, f2, f3))
	old := x.store.Link()

	// The app maps the link event to every key of fdb and routes.
	ev := state.Event{Kind: state.KindLink, Key: iface, Old: old, New: old}
	if got := x.fdb.KeysFor(ev); !slices.Contains(got, mac(2).String()) || !slices.Contains(got, mac(3).String()) {
		t.Errorf("fdb KeysFor(link) = %v, want both VTEPs", got)
	}
	if got := x.rt.KeysFor(ev); !slices.Contains(got, "198.18.2.0/24") || !slices.Contains(got, "198.18.3.0/24") {
		t.Errorf("routes KeysFor(link) = %v, want both subnets", got)
	}

	l, err := x.ns.Handle.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.ns.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, func() error {
		if x.store.Link().Present {
			return errorf("store link still present after delete: %+v", x.store.Link())
		}
		return nil
	})
	newMAC := mac(0x42)
	netlinkxtest.VXLAN(t, x.ns, iface, x.ul, localIP, newMAC)
	testutil.Eventually(t, 2*time.Second, func() error {
		if l := x.store.Link(); !l.Present || l.MAC.String() != newMAC.String() || l.Local != localIP || l.VNI != 1 || !l.Up {
			return errorf("store link %+v, want present, up, mac %s, local %s, vni 1", l, newMAC, localIP)
		}
		return nil
	})
	x.eventually(5*time.Second, x.present(ipRoute, r2, r3), x.present(ipNeigh, n2, n3), x.present(bridgeFDB, f2, f3))

	// Peer h2 recreated its device: new MAC in its record.
	x.store.PutNetwork(keys.Network("h2", "app"), netRecord(2, "app", "198.18.2.0/24", mac(0x22)), "test:h2 new mac")
	x.eventually(5*time.Second,
		x.present(ipNeigh, "198.18.2.0 lladdr "+mac(0x22).String()+" PERMANENT"),
		x.present(bridgeFDB, mac(0x22).String()+" dst "+peerIP(2).String()+" self permanent"),
		x.gone(bridgeFDB, mac(2).String()))
}

// Routes of other protocols, on the device or elsewhere, are never touched,
// also when one holds a wanted subnet's place (that is reported instead).
func TestForeignRoutesNeverTouched(t *testing.T) {
	x := newHost(t, routes.Options{})
	foreign := [][]string{
		{"198.18.9.0/24", "via", "198.18.9.0", "dev", iface, "onlink", "proto", "static"},
		{"198.18.10.0/24", "dev", iface, "proto", "static"},
		{"198.18.11.0/24", "via", "198.51.100.254", "proto", "static"},
		{"198.18.4.0/24", "via", "198.51.100.254", "proto", "static"}, // a record claims it below
	}
	for _, r := range foreign {
		x.run(append([]string{"ip", "route", "add"}, r...)...)
	}
	before := x.run("ip", "-d", "route", "show", "proto", "static")
	x.putRecord(2, "app", "198.18.4.0/24")
	x.putRecord(2, "web", "198.18.9.0/24") // its key is held by the static route on the device
	x.once()
	x.store.DeleteNetwork(keys.Network("h2", "web"), "test:delete")
	x.once()
	x.once()
	if after := x.run("ip", "-d", "route", "show", "proto", "static"); after != before {
		t.Errorf("static routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out := x.run("ip", "route", "show", "proto", "76"); out != "" {
		t.Errorf("routes of ours where foreign routes hold the place:\n%s", out)
	}
	found := false
	for _, c := range x.rt.Conflicts() {
		found = found || (c.Prefix == netip.MustParsePrefix("198.18.4.0/24") && strings.Contains(c.Reason, "foreign"))
	}
	if !found {
		t.Errorf("conflicts %v, want 198.18.4.0/24 held by a foreign route", x.rt.Conflicts())
	}
}

// A flannel lease claiming a local Docker network's subnet: flanneld's
// tunnel route (which replaced the bridge's connected route) is removed, the
// connected route restored, and the conflict reported.
func TestLeaseOnLocalSubnetKeepsBridgeRoute(t *testing.T) {
	x := newHost(t, routes.Options{})
	local := netip.MustParsePrefix("10.5.35.0/24")
	br := netlinkxtest.Bridge(t, x.ns, "br-app1", netip.MustParsePrefix("10.5.35.1/24"))
	x.store.PutLocal(state.LocalNetwork{ID: "n1", Name: "app1", Subnet: local, Gateway: netip.MustParseAddr("10.5.35.1"), Bridge: "br-app1"}, "test")
	connected := "10.5.35.0/24 dev br-app1 proto kernel scope link src 10.5.35.1"
	if err := x.present([]string{"ip", "route"}, connected)(); err != nil {
		t.Fatal(err)
	}
	// What flanneld does with a vxlan lease for that subnet.
	vx, err := x.ns.Handle.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	flannelRoute := &netlink.Route{LinkIndex: vx.Attrs().Index, Dst: netlinkx.IPNet(local), Gw: local.Addr().AsSlice(), Flags: unix.RTNH_F_ONLINK}
	if err := x.ns.Handle.RouteReplace(flannelRoute); err != nil {
		t.Fatal(err)
	}
	x.putLease(5, "10.5.35.0/24")
	x.start()
	x.eventually(5*time.Second, x.present([]string{"ip", "route"}, connected), x.gone([]string{"ip", "route"}, "10.5.35.0/24 via"))
	testutil.Eventually(t, 2*time.Second, func() error {
		cs := x.rt.Conflicts()
		if len(cs) != 1 || cs[0].Prefix != local || !slices.Contains(cs[0].Local, "app1") || !cs[0].Active {
			return errorf("conflicts %v, want 10.5.35.0/24 against app1", cs)
		}
		return nil
	})
	// A remote record for it is refused too, and the bridge keeps its route.
	x.putRecord(6, "other", "10.5.35.0/24")
	x.once()
	if err := x.has([]string{"ip", "route"}, false, connected); err != nil {
		t.Error(err)
	}
	if err := x.has([]string{"ip", "route"}, true, "10.5.35.0/24 via"); err != nil {
		t.Error(err)
	}
	// The conflict clears when the local network goes (Docker deletes its
	// bridge), and the subnet is routed to the record's host.
	if err := x.ns.Handle.LinkDel(br); err != nil {
		t.Fatal(err)
	}
	x.store.DeleteLocal("app1", "test")
	r6, _, _ := triple(6, "10.5.35.0/24", "proto 76 ")
	x.eventually(2*time.Second, x.present(ipRoute, r6))
	testutil.Eventually(t, 2*time.Second, func() error {
		if cs := x.rt.Conflicts(); len(cs) != 0 {
			return errorf("conflicts %v after the local network went", cs)
		}
		return nil
	})
	x.mu.Lock()
	defer x.mu.Unlock()
	if n := len(x.conflicts); n < 2 || x.conflicts[n-1].Active {
		t.Errorf("OnConflict calls %v: want the conflict reported, then cleared", x.conflicts)
	}
}

// A resync over a converged host makes no netlink write: through Once and
// through the manager's resync (the runners, the real path).
func TestResyncOverConvergedHostMakesNoWrites(t *testing.T) {
	x := newHost(t, routes.Options{
		Gateways: []config.GatewayRoute{{Dst: netip.MustParsePrefix("10.20.0.7/32"), Gateway: peerIP(254)}},
		Extra:    []config.ExtraRoute{{Dst: netip.MustParsePrefix("10.30.0.0/16"), Gateway: peerIP(253), Dev: "ul0"}},
	})
	for i := range 20 {
		x.putRecord(byte(10+i%5), "net"+string(rune('a'+i)), netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(20 + i), 0}), 24).String())
	}
	x.putLease(3, "198.18.3.0/24")
	x.once()
	x.once() // the vxlan key ran first in the first pass; now everything is in place
	w0 := x.h.WriteStats()
	x.once()
	if w := x.h.WriteStats(); w != w0 {
		t.Fatalf("one-shot pass over a converged host wrote: %+v -> %+v", w0, w)
	}

	stats := x.mgr.Stats()
	x.start()
	r := x.mgr.Runner(routes.Name)
	before := r.Stats().Reconciles
	if err := x.mgr.Resync(context.Background(), "resync"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if r.Len() != 0 || r.Stats().Reconciles < before+23 {
			return errorf("routes runner: %d queued, %d reconciles since resync", r.Len(), r.Stats().Reconciles-before)
		}
		return nil
	})
	if w := x.h.WriteStats(); w != w0 {
		t.Fatalf("resync over a converged host wrote: %+v -> %+v", w0, w)
	}
	for name, s := range x.mgr.Stats() {
		if s.Changes != stats[name].Changes || s.Errors != stats[name].Errors {
			t.Errorf("%s: %+v after resync, %+v before: want no changes or errors", name, s, stats[name])
		}
	}
}

// HOST_GATEWAY_MAP and FLANNEL_ROUTES_EXTRA routes are added, and removed
// when dropped from the setting (a restart with a smaller list).
func TestConfiguredRoutesAddedAndRemoved(t *testing.T) {
	x := newHost(t, routes.Options{
		Gateways: []config.GatewayRoute{{Dst: netip.MustParsePrefix("10.20.0.7/32"), Gateway: peerIP(254)}},
		Extra: []config.ExtraRoute{
			{Dst: netip.MustParsePrefix("10.30.0.0/16"), Gateway: peerIP(253), Dev: "ul0"},
			{Dst: netip.MustParsePrefix("10.31.0.0/16"), Gateway: peerIP(252)},
		},
	})
	x.once()
	show := []string{"ip", "route", "show", "proto", "76"}
	for _, want := range []string{"10.20.0.7 via 198.51.100.254 dev ul0", "10.30.0.0/16 via 198.51.100.253 dev ul0", "10.31.0.0/16 via 198.51.100.252 dev ul0"} {
		if err := x.has(show, false, want); err != nil {
			t.Error(err)
		}
	}
	keysA, err := x.rt.Keys(context.Background())
	if err != nil || !slices.Contains(keysA, "gw:10.20.0.7/32") || !slices.Contains(keysA, "extra:10.31.0.0/16") {
		t.Errorf("Keys = %v, %v; want the configured keys", keysA, err)
	}

	// Restart with a smaller list: a new controller on the same kernel.
	y := routes.New(x.h, x.store, routes.Options{Host: "h1",
		Extra: []config.ExtraRoute{{Dst: netip.MustParsePrefix("10.30.0.0/16"), Gateway: peerIP(253), Dev: "ul0"}}})
	ks, err := y.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, rec := withRecorder()
	for _, k := range ks {
		if err := y.Reconcile(ctx, k); err != nil {
			t.Fatalf("reconcile %s: %v", k, err)
		}
	}
	if err := x.has(show, false, "10.30.0.0/16 via 198.51.100.253 dev ul0"); err != nil {
		t.Error(err)
	}
	if err := x.has(show, true, "10.20.0.7", "10.31.0.0/16"); err != nil {
		t.Error(err)
	}
	if got := rec.Changes(); len(got) != 2 || !strings.HasPrefix(got[0], "route del ") {
		t.Errorf("recorded %q, want two route deletions", got)
	}
}
