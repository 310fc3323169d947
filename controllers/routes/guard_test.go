package routes_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// flanneld's state for a lease our store does not hold (a wrong
// FLANNEL_PREFIX) is left alone while the store holds no lease of this host;
// once it does, the same state is swept as orphaned.
func TestFlannelStateKeptWithoutLeaseOfThisHost(t *testing.T) {
	x := newHost(t, routes.Options{})
	r, n, f := triple(7, "198.18.7.0/24", "proto boot ")
	x.run("ip", "route", "add", "198.18.7.0/24", "via", "198.18.7.0", "dev", iface, "onlink", "proto", "boot")
	x.run("ip", "neigh", "replace", "198.18.7.0", "lladdr", mac(7).String(), "dev", iface, "nud", "permanent")
	x.run("bridge", "fdb", "append", mac(7).String(), "dev", iface, "dst", peerIP(7).String(), "self", "permanent")
	// Other hosts' leases and records do not prove we see flanneld's registry.
	x.putLease(3, "198.18.3.0/24")
	x.putRecord(2, "app", "198.18.2.0/24")
	x.once()
	x.once()
	w0 := x.h.WriteStats()
	x.once()
	if w := x.h.WriteStats(); w != w0 {
		t.Errorf("a pass over converged state wrote: %+v -> %+v", w0, w)
	}
	for _, check := range []func() error{x.present(ipRoute, r), x.present(ipNeigh, n), x.present(bridgeFDB, f)} {
		if err := check(); err != nil {
			t.Error(err)
		}
	}

	x.putSelfLease("198.18.1.0/24")
	x.once()
	for _, check := range []func() error{x.gone(ipRoute, "198.18.7.0/24"), x.gone(ipNeigh, "198.18.7.0 "), x.gone(bridgeFDB, mac(7).String())} {
		if err := check(); err != nil {
			t.Error(err)
		}
	}
}

// A local network created over a routed remote subnet takes it out of the
// tunnel at once (the local network's event enqueues the overlapped subnet),
// and its removal brings the route back, without any resync.
func TestLocalNetworkOverRemoteSubnet(t *testing.T) {
	x := newHost(t, routes.Options{})
	x.start()
	x.putRecord(2, "app", "198.19.40.0/24")
	r2, _, _ := triple(2, "198.19.40.0/24", "proto 76 ")
	x.eventually(5*time.Second, x.present(ipRoute, r2))

	netlinkxtest.Bridge(t, x.ns, "br-big", netip.MustParsePrefix("198.19.0.1/16"))
	big := state.LocalNetwork{ID: "n1", Name: "big", Subnet: netip.MustParsePrefix("198.19.0.0/16"),
		Gateway: netip.MustParseAddr("198.19.0.1"), Bridge: "br-big"}
	x.store.PutLocal(big, "docker:create big")
	x.eventually(time.Second, x.gone(ipRoute, "198.19.40.0/24"))
	testutil.Eventually(t, time.Second, func() error {
		cs := x.rt.Conflicts()
		if len(cs) != 1 || cs[0].Prefix != netip.MustParsePrefix("198.19.40.0/24") || !slices.Contains(cs[0].Local, "big") {
			return errorf("conflicts %v, want 198.19.40.0/24 against big", cs)
		}
		return nil
	})

	x.store.DeleteLocal("big", "docker:destroy big")
	x.eventually(time.Second, x.present(ipRoute, r2))
	testutil.Eventually(t, time.Second, func() error {
		if cs := x.rt.Conflicts(); len(cs) != 0 {
			return errorf("conflicts %v after the local network went", cs)
		}
		return nil
	})
}

// KeysFor of a local network includes every record, lease and conflict
// subnet overlapping it, before and after.
func TestKeysForLocalOverlaps(t *testing.T) {
	store := state.New()
	c := routes.New(nil, store, routes.Options{Host: "h1", PublicIP: localIP})
	put := func(n byte, subnet string) {
		store.PutNetwork(keys.Network("h2", subnet), registry.Network{Host: "h2", Network: "n", Subnet: netip.MustParsePrefix(subnet),
			PublicIP: peerIP(n), VtepMAC: mac(n), VNI: 1}, "t")
	}
	put(2, "198.19.40.0/24")
	put(2, "198.19.41.0/24")
	put(2, "198.18.9.0/24")
	store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.19.50.0/24"), Raw: flannel.NewVXLAN(peerIP(3), 1, mac(3)),
		PublicIP: peerIP(3), VNI: 1, VtepMAC: mac(3)}, "t")
	store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("10.9.0.0/24"), Raw: flannel.NewVXLAN(peerIP(3), 1, mac(3)),
		PublicIP: peerIP(3), VNI: 1, VtepMAC: mac(3)}, "t")
	local := func(subnet string) state.LocalNetwork {
		return state.LocalNetwork{Name: "app", Subnet: netip.MustParsePrefix(subnet), Bridge: "br-app"}
	}
	for _, tc := range []struct {
		name string
		ev   state.Event
		want []string
	}{
		{"created over records and a lease", state.Event{Kind: state.KindLocal, New: local("198.19.0.0/16")},
			[]string{"198.19.0.0/16", "198.19.40.0/24", "198.19.41.0/24", "198.19.50.0/24"}},
		{"created inside a record's subnet", state.Event{Kind: state.KindLocal, New: local("198.19.40.128/25")},
			[]string{"198.19.40.0/24", "198.19.40.128/25"}},
		{"moved", state.Event{Kind: state.KindLocal, Old: local("198.19.40.0/24"), New: local("198.18.0.0/16")},
			[]string{"198.18.0.0/16", "198.18.9.0/24", "198.19.40.0/24"}},
		{"removed", state.Event{Kind: state.KindLocal, Old: local("10.9.0.0/16")}, []string{"10.9.0.0/16", "10.9.0.0/24"}},
		{"no overlap", state.Event{Kind: state.KindLocal, New: local("198.18.200.0/24")}, []string{"198.18.200.0/24"}},
		{"record", state.Event{Kind: state.KindNetwork, New: registry.Network{Subnet: netip.MustParsePrefix("198.19.40.0/24")}},
			[]string{"198.19.40.0/24"}},
		{"lease of another host", state.Event{Kind: state.KindLease, Old: state.Lease{Subnet: netip.MustParsePrefix("198.19.50.0/24")}},
			[]string{"198.19.50.0/24"}},
		{"host: nothing", state.Event{Kind: state.KindHost}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.KeysFor(tc.ev); !slices.Equal(got, tc.want) {
				t.Errorf("KeysFor = %v, want %v", got, tc.want)
			}
		})
	}
}
