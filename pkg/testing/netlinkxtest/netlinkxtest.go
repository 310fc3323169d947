// Package netlinkxtest builds the data-plane fixtures the real-kernel tests
// share: a netlinkx.Handle bound to a throwaway namespace and a VXLAN device
// shaped like flanneld's flannel.1 on a veth underlay.
package netlinkxtest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// Handle returns a netlinkx.Handle on ns, closed when the test ends.
func Handle(t testing.TB, ns *testutil.Netns) *netlinkx.Handle {
	t.Helper()
	h, err := netlinkx.New(ns.Handle, ns.NS)
	if err != nil {
		t.Fatalf("netlinkx handle in %s: %v", ns.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Underlay creates a veth pair "ul0"/"ul1" in ns with local/24 on ul0, both
// up, and returns ul0. It is the VXLAN device's underlay (dummy links are not
// available on every kernel).
func Underlay(t testing.TB, ns *testutil.Netns, local netip.Addr) netlink.Link {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}
	if err := ns.Handle.LinkAdd(veth); err != nil {
		t.Fatalf("add veth in %s: %v", ns.Name, err)
	}
	ul0 := mustLink(t, ns, "ul0")
	addr := &netlink.Addr{IPNet: netlinkx.IPNet(netip.PrefixFrom(local, 24))}
	if err := ns.Handle.AddrAdd(ul0, addr); err != nil {
		t.Fatalf("address %s on ul0: %v", local, err)
	}
	for _, n := range []string{"ul0", "ul1"} {
		if err := ns.Handle.LinkSetUp(mustLink(t, ns, n)); err != nil {
			t.Fatalf("%s up: %v", n, err)
		}
	}
	return ul0
}

// VXLAN creates flanneld's device: VNI 1, port 8472, source address local on
// parent, learning off, up. mac may be nil (the kernel picks one).
func VXLAN(t testing.TB, ns *testutil.Netns, name string, parent netlink.Link, local netip.Addr, mac net.HardwareAddr) *netlink.Vxlan {
	t.Helper()
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, HardwareAddr: mac},
		VxlanId:      1,
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      local.AsSlice(),
		Port:         8472,
		Learning:     false,
	}
	if err := ns.Handle.LinkAdd(vx); err != nil {
		t.Fatalf("add vxlan %s in %s: %v", name, ns.Name, err)
	}
	l := mustLink(t, ns, name)
	if err := ns.Handle.LinkSetUp(l); err != nil {
		t.Fatalf("%s up: %v", name, err)
	}
	return mustLink(t, ns, name).(*netlink.Vxlan)
}

// Bridge creates a bridge with gw/bits on it, up, like a Docker network's.
func Bridge(t testing.TB, ns *testutil.Netns, name string, gw netip.Prefix) netlink.Link {
	t.Helper()
	if err := ns.Handle.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	br := mustLink(t, ns, name)
	if err := ns.Handle.AddrAdd(br, &netlink.Addr{IPNet: netlinkx.IPNet(gw)}); err != nil {
		t.Fatalf("address %s on %s: %v", gw, name, err)
	}
	if err := ns.Handle.LinkSetUp(br); err != nil {
		t.Fatalf("%s up: %v", name, err)
	}
	return mustLink(t, ns, name)
}

func mustLink(t testing.TB, ns *testutil.Netns, name string) netlink.Link {
	t.Helper()
	l, err := ns.Handle.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, ns.Name, err)
	}
	return l
}
