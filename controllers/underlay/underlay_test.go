package underlay_test

import (
	"context"
	"net/netip"
	"reflect"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/controllers/underlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

func p(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func a(s string) netip.Addr   { return netip.MustParseAddr(s) }

// A host's underlay read from a real namespace: the uplink's address and
// connected route, a second network, the default gateway, etcd behind it;
// flannel.1, Docker's bridges and loopback left out.
func TestObserve(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-ul")
	h := netlinkxtest.Handle(t, ns)
	local := a("198.51.100.1")
	ul := netlinkxtest.Underlay(t, ns, local)
	netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	netlinkxtest.Bridge(t, ns, "docker0", p("198.18.1.1/24"))
	netlinkxtest.Bridge(t, ns, "br-0123456789ab", p("198.19.5.1/24"))
	netlinkxtest.Bridge(t, ns, "custom0", p("198.19.6.1/24")) // a local network's bridge by its own name
	netlinkxtest.Bridge(t, ns, "mgmt0", p("192.0.2.66/26"))   // not Docker's: underlay
	ns.Run(t, "ip", "addr", "add", "198.18.1.0/32", "dev", "flannel.1")
	ns.Run(t, "ip", "route", "add", "default", "via", "198.51.100.254")
	store := state.New()
	store.PutLocal(state.LocalNetwork{Name: "custom", Subnet: p("198.19.6.0/24"), Bridge: "custom0"}, "test")
	c := underlay.New(h, store, underlay.Options{VXLANIface: "flannel.1",
		EtcdEndpoints: []string{"http://203.0.113.10:2379", "https://198.51.100.9:2379", "http://localhost:2379", "bad url"},
		PeerRoutes:    []netip.Prefix{p("203.0.113.77/32"), p("192.0.2.128/25")}})
	got, err := c.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Underlay{
		Addrs:    []netip.Prefix{p("192.0.2.66/26"), p("198.51.100.1/24")},
		Routes:   []netip.Prefix{p("192.0.2.64/26"), p("198.51.100.0/24")},
		Gateways: []netip.Addr{a("198.51.100.254")},
		// etcd behind the gateway, one on the link, localhost (loopback:
		// reserved anyway, kept for the record)
		Etcd: []netip.Addr{a("127.0.0.1"), a("198.51.100.9"), a("198.51.100.254"), a("203.0.113.10")},
		// HOST_GATEWAY_MAP's destinations, as configured (no route needed)
		Peers: []netip.Prefix{p("192.0.2.128/25"), p("203.0.113.77/32")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Observe =\n %+v\nwant\n %+v", got, want)
	}
	// Reconcile stores it; a second one with nothing changed publishes nothing.
	if err := c.Reconcile(context.Background(), underlay.Key); err != nil {
		t.Fatal(err)
	}
	v := store.Version()
	if err := c.Reconcile(context.Background(), underlay.Key); err != nil {
		t.Fatal(err)
	}
	if u := store.Underlay(); !u.Observed || !reflect.DeepEqual(u.Underlay, want) || store.Version() != v {
		t.Fatalf("store: %+v (version %d -> %d)", u, v, store.Version())
	}
}
