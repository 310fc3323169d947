package app

import (
	"net"
	"net/netip"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

func testApp() *App {
	cfg := config.Config{HostName: "node-1", VXLANIface: "flannel.1", Recovery: config.RecoveryFlannel}
	return &App{cfg: cfg, store: state.New(), h: newHealth(cfg), synced: make(chan struct{})}
}

func vxlanLease(subnet, ip string, mac net.HardwareAddr) state.Lease {
	return state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: flannel.NewVXLAN(netip.MustParseAddr(ip), 1, mac),
		PublicIP: netip.MustParseAddr(ip), VNI: 1, VtepMAC: mac}
}

var ourMAC = net.HardwareAddr{2, 0x42, 0, 0, 0, 1}

// Peers are the other hosts' vxlan leases, probed at the lease's network
// address; our own lease and reservations are not probed.
func TestPeerTargets(t *testing.T) {
	a := testApp()
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: ourMAC, Local: netip.MustParseAddr("198.51.100.11")}, "test")
	a.store.PutLease(vxlanLease("198.18.1.0/24", "198.51.100.11", ourMAC), "test")
	a.store.PutLease(vxlanLease("198.18.2.0/24", "198.51.100.12", net.HardwareAddr{2, 0x42, 0, 0, 0, 2}), "test")
	a.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.19.9.0/24"), Raw: flannel.NewReservation("node-2", "web"),
		PublicIP: netip.MustParseAddr("0.0.0.0")}, "test")
	a.store.PutHost(registry.HostRecord{Host: "node-2", PublicIP: "198.51.100.12"}, "test")
	ts := a.peerTargets()
	if len(ts) != 1 || ts[0].Key != "198.51.100.12" || ts[0].Host != "node-2" || ts[0].Addr != netip.MustParseAddr("198.18.2.0") {
		t.Fatalf("targets = %+v", ts)
	}
}

// The recovery fault: a missing device always counts; a missing lease only
// while etcd answers and was listed (an etcd outage never restarts flanneld).
func TestFault(t *testing.T) {
	a := testApp()
	if f := a.fault(); f != "VXLAN device flannel.1 missing" {
		t.Fatalf("fault without a device = %q", f)
	}
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: ourMAC, Local: netip.MustParseAddr("198.51.100.11")}, "test")
	if f := a.fault(); f != "" {
		t.Fatalf("fault before etcd was listed = %q, want none", f)
	}
	close(a.synced)
	if f := a.fault(); f != "" {
		t.Fatalf("fault while etcd does not answer = %q, want none", f)
	}
	a.h.etcdOK.Store(true)
	if f := a.fault(); f == "" {
		t.Fatal("no fault with etcd up and no lease of ours")
	}
	a.store.PutLease(vxlanLease("198.18.1.0/24", "198.51.100.11", ourMAC), "test")
	if f := a.fault(); f != "" {
		t.Fatalf("fault with our lease present = %q", f)
	}
	// The device goes away: its last local address still names our lease.
	a.store.SetLink(state.Link{Name: "flannel.1"}, "test")
	if f := a.fault(); f != "VXLAN device flannel.1 missing" {
		t.Fatalf("fault = %q", f)
	}
	if ip := a.selfPublicIP(); ip != netip.MustParseAddr("198.51.100.11") {
		t.Fatalf("self PublicIP with the device gone = %s, want the last known", ip)
	}
}

// The targets are derived once per store version: unchanged, the prober is
// not handed them again and the list is not rebuilt; a new lease or a new
// local address shows at the next call.
func TestPeerTargetsCachedByVersion(t *testing.T) {
	a := testApp()
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: ourMAC, Local: netip.MustParseAddr("198.51.100.11")}, "test")
	a.store.PutLease(vxlanLease("198.18.2.0/24", "198.51.100.12", net.HardwareAddr{2, 0x42, 0, 0, 0, 2}), "test")
	ts, changed := a.cachedTargets(true)
	if len(ts) != 1 || !changed {
		t.Fatalf("first targets = %+v changed=%v, want one, changed", ts, changed)
	}
	if doc := a.peerTargets(); len(doc) != 1 || &doc[0] != &ts[0] {
		t.Fatalf("unchanged store: targets rebuilt (%p vs %p)", doc, ts)
	}
	if _, changed := a.cachedTargets(true); changed {
		t.Fatal("unchanged store: targets reported changed")
	}
	a.store.PutLease(vxlanLease("198.18.3.0/24", "198.51.100.13", net.HardwareAddr{2, 0x42, 0, 0, 0, 3}), "test")
	if doc := a.peerTargets(); len(doc) != 2 { // the doctor's read does not count as handed
		t.Fatalf("after a new lease: %+v", doc)
	}
	if ts, changed := a.cachedTargets(true); len(ts) != 2 || !changed {
		t.Fatalf("after a new lease: %+v changed=%v, want two, changed", ts, changed)
	}
	// Our address changes to that of the lease of .13 (the device's address is
	// read through the store, so this is a new version too).
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: ourMAC, Local: netip.MustParseAddr("198.51.100.13")}, "test")
	if ts, changed := a.cachedTargets(true); len(ts) != 1 || ts[0].Key != "198.51.100.12" || !changed {
		t.Fatalf("after our address changed: %+v changed=%v", ts, changed)
	}
}
