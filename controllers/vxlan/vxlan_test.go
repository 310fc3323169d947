package vxlan_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

func TestObserveLifecycle(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-vx")
	h := netlinkxtest.Handle(t, ns)
	store := state.New()
	var events []state.Event
	store.Subscribe(func(ev state.Event) { events = append(events, ev) })
	c := vxlan.New(h, store, "flannel.1")
	if keys, _ := c.Keys(context.Background()); !slices.Equal(keys, []string{"flannel.1"}) {
		t.Errorf("Keys = %v", keys)
	}
	reconcileOnce := func() []string {
		t.Helper()
		ctx, rec := reconcile.WithRecorder(context.Background())
		if err := c.Reconcile(ctx, "flannel.1"); err != nil {
			t.Fatal(err)
		}
		return rec.Changes()
	}

	// Absent: the store says so.
	reconcileOnce()
	if l := store.Link(); l.Present || l.Name != "flannel.1" {
		t.Fatalf("link = %+v, want flannel.1 absent", l)
	}

	local := netip.MustParseAddr("198.51.100.1")
	ul := netlinkxtest.Underlay(t, ns, local)
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	vx := netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, mac)
	if got := reconcileOnce(); len(got) != 1 || !strings.HasPrefix(got[0], "observe flannel.1 up") {
		t.Errorf("recorded %q, want one observation", got)
	}
	l := store.Link()
	if !l.Present || !l.Up || l.Index != vx.Index || l.MAC.String() != mac.String() || l.Local != local || l.VNI != 1 || l.MTU != vx.MTU {
		t.Errorf("link = %+v, want present, up, index %d, mac %s, local %s, vni 1", l, vx.Index, mac, local)
	}
	n := len(events)
	if got := reconcileOnce(); len(got) != 0 || len(events) != n {
		t.Errorf("unchanged device: recorded %q, %d events; want nothing", got, len(events)-n)
	}

	// A new MAC is a link event with old and new facts.
	mac2 := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x22}
	if err := ns.Handle.LinkSetHardwareAddr(vx, mac2); err != nil {
		t.Fatal(err)
	}
	reconcileOnce()
	ev := events[len(events)-1]
	if ev.Kind != state.KindLink || ev.Old.(state.Link).MAC.String() != mac.String() || ev.New.(state.Link).MAC.String() != mac2.String() {
		t.Errorf("event %+v, want a link event from %s to %s", ev, mac, mac2)
	}
	if got := c.KeysFor(ev); len(got) != 0 {
		t.Errorf("KeysFor = %v, want none (the netlink watcher enqueues the device)", got)
	}
}

func TestNotVXLAN(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-vx")
	h := netlinkxtest.Handle(t, ns)
	netlinkxtest.Bridge(t, ns, "flannel.1", netip.MustParsePrefix("198.18.0.1/24"))
	store := state.New()
	err := vxlan.New(h, store, "flannel.1").Reconcile(context.Background(), "flannel.1")
	if err == nil || !strings.Contains(err.Error(), "not vxlan") {
		t.Errorf("Reconcile on a bridge: %v, want a not-vxlan error", err)
	}
	if store.Link().Present {
		t.Errorf("link %+v recorded present", store.Link())
	}
}
