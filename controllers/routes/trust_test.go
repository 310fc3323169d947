package routes_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/underlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// Finding B4: flanneld programs a new peer's route, neighbour and FDB entry
// and writes its lease within a millisecond, but the netlink notification
// can reach us before the etcd watch does. The entries must survive until
// the lease arrives (SweepGrace), and be swept only when it never does.
func TestFlannelEntriesBeforeTheirLease(t *testing.T) {
	x := newHost(t, routes.Options{SweepGrace: time.Second})
	x.putSelfLease("198.18.1.0/24") // we see flanneld's registry: sweeping is allowed
	x.start()
	flanneld := func(n byte, subnet string) {
		p := netip.MustParsePrefix(subnet)
		x.run("ip", "route", "replace", subnet, "via", p.Addr().String(), "dev", iface, "onlink", "proto", "boot")
		x.run("ip", "neigh", "replace", p.Addr().String(), "lladdr", mac(n).String(), "dev", iface, "nud", "permanent")
		x.run("bridge", "fdb", "append", mac(n).String(), "dev", iface, "dst", peerIP(n).String(), "self", "permanent")
	}
	r8, n8, f8 := triple(8, "198.18.8.0/24", "proto boot ")
	flanneld(8, "198.18.8.0/24")
	// Well past the netlink notification, but inside the grace period.
	time.Sleep(300 * time.Millisecond) //nolint:forbidigo // the window in which the old code deleted them
	for _, check := range []func() error{x.present(ipRoute, r8), x.present(ipNeigh, n8), x.present(bridgeFDB, f8)} {
		if err := check(); err != nil {
			t.Fatalf("swept before its lease could arrive: %v", err)
		}
	}
	x.putLease(8, "198.18.8.0/24")
	// A VTEP whose lease never comes is swept once the grace has passed
	// (its neighbour, unknown to us until a resync dumps the table, at a
	// resync after that).
	flanneld(9, "198.18.9.0/24")
	x.eventually(5*time.Second, x.gone(ipRoute, "198.18.9.0/24"), x.gone(bridgeFDB, mac(9).String()))
	testutil.Eventually(t, 5*time.Second, func() error {
		x.once()
		return x.gone(ipNeigh, "198.18.9.0 ")()
	})
	for _, check := range []func() error{x.present(ipRoute, r8), x.present(ipNeigh, n8), x.present(bridgeFDB, f8)} {
		if err := check(); err != nil {
			t.Fatalf("the entry whose lease arrived was swept: %v", err)
		}
	}
}

// Finding B5: a local network that contains remote subnets (a local
// 198.16.0.0/13 around flannel's 198.18.3.0/24) takes our routes out of the
// tunnel and reports it, but leaves flanneld's more specific routes alone.
func TestLocalSupernetKeepsFlannelRoutes(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.putSelfLease("198.18.1.0/24")
	x.putLease(3, "198.18.3.0/24")
	x.putRecord(2, "app", "198.19.40.0/24")
	x.start()
	r3, _, _ := triple(3, "198.18.3.0/24", "proto boot ")
	r2, _, _ := triple(2, "198.19.40.0/24", "proto 76 ")
	x.eventually(5*time.Second, x.present(ipRoute, r3, r2))

	netlinkxtest.Bridge(t, x.ns, "br-wide", netip.MustParsePrefix("198.16.0.1/13"))
	x.store.PutLocal(state.LocalNetwork{ID: "w", Name: "wide", Subnet: netip.MustParsePrefix("198.16.0.0/13"),
		Gateway: netip.MustParseAddr("198.16.0.1"), Bridge: "br-wide"}, "docker:create wide")
	x.eventually(2*time.Second, x.gone(ipRoute, "198.19.40.0/24"))
	x.once() // every key once more: nothing may delete flanneld's route
	if err := x.present(ipRoute, r3)(); err != nil {
		t.Fatalf("flanneld's route inside a local supernet was deleted: %v", err)
	}
	testutil.Eventually(t, time.Second, func() error {
		for _, c := range x.rt.Conflicts() {
			if c.Prefix == netip.MustParsePrefix("198.19.40.0/24") && slices.Contains(c.Local, "wide") {
				return nil
			}
		}
		return errorf("no conflict reported for 198.19.40.0/24: %v", x.rt.Conflicts())
	})
}

// The trust boundary on a real kernel: the underlay observed from the
// namespace (a default gateway, etcd behind it), hostile records in etcd's
// place: none reaches the kernel, each is reported once with its rule, and
// the legitimate record is routed.
func TestHostileRecordsNeverProgrammed(t *testing.T) {
	x := newHost(t, routes.Options{Policy: &policy.Policy{Allowed: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, MinBits: 1}})
	x.run("ip", "route", "add", "default", "via", "198.51.100.254")
	u := underlay.New(x.h, x.store, underlay.Options{VXLANIface: iface, EtcdEndpoints: []string{"http://203.0.113.10:2379"}})
	if err := u.Reconcile(context.Background(), underlay.Key); err != nil {
		t.Fatal(err)
	}
	x.putSelfLease("198.18.1.0/24")
	x.putLease(2, "198.18.2.0/24")
	x.putRecord(2, "web", "198.19.40.0/24")
	x.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.19.40.0/24"), Raw: flannel.NewReservation("h2", "web"),
		PublicIP: netip.IPv4Unspecified(), Reservation: &flannel.ReservationData{Host: "h2", Network: "web"}}, "test")
	hostile := map[string]string{
		"203.0.113.10/32":   policy.RuleUnderlay, // etcd, behind the gateway
		"198.51.100.254/32": policy.RuleUnderlay, // the gateway
		"198.51.100.0/25":   policy.RuleUnderlay, // our own network
		"128.0.0.0/1":       policy.RuleReserved,
		"198.51.100.2/32":   policy.RuleUnderlay, // a peer's PublicIP, on our network
		"198.19.40.0/25":    policy.RuleOverlap,
		"198.18.2.0/26":     policy.RuleOverlap,
	}
	for subnet := range hostile {
		key := keys.Network("evil", strings.NewReplacer("/", "-", ".", "-").Replace(subnet))
		x.store.PutNetwork(key, registry.Network{Host: "evil", Network: "n", Subnet: netip.MustParsePrefix(subnet),
			PublicIP: peerIP(66), VtepMAC: mac(66), VNI: 1}, "test")
	}
	stolen := keys.Network("evil", "stolen")
	x.store.PutNetwork(stolen, registry.Network{Host: "evil", Network: "stolen", Subnet: netip.MustParsePrefix("198.19.9.0/24"),
		PublicIP: peerIP(66), VtepMAC: mac(2), VNI: 1}, "test")
	hostile["198.19.9.0/24"] = policy.RuleVTEP
	x.start()
	r2, n2, f2 := triple(2, "198.19.40.0/24", "proto 76 ")
	x.eventually(5*time.Second, x.present(ipRoute, r2), x.present(ipNeigh, n2), x.present(bridgeFDB, f2))
	x.once()
	for subnet, rule := range hostile {
		p := netip.MustParsePrefix(subnet)
		if err := x.gone(ipRoute, subnet+" via")(); err != nil {
			t.Errorf("hostile %s programmed: %v", subnet, err)
		}
		var seen []routes.Conflict
		x.mu.Lock()
		for _, c := range x.conflicts {
			if c.Prefix == p && c.Active {
				seen = append(seen, c)
			}
		}
		x.mu.Unlock()
		if len(seen) != 1 || seen[0].Rule != rule {
			t.Errorf("%s: reports %+v, want one with rule %s", subnet, seen, rule)
		}
	}
	if err := x.gone(ipNeigh, mac(66).String())(); err != nil {
		t.Error(err)
	}
	if err := x.present(bridgeFDB, mac(2).String()+" dst "+peerIP(2).String())(); err != nil {
		t.Errorf("a record naming h2's MAC moved its FDB entry: %v", err)
	}
}
