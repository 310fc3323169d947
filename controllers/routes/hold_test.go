package routes_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// etcd lost its data and was re-listed: the snapshot is empty but for what
// was already written again (here this host's own flanneld lease). While
// the hold lasts, neither our record's route, neighbour and FDB entry nor
// flanneld's for a remote lease are deleted; once it ends, the snapshot wins.
func TestHoldKeepsStateWhileEtcdIsRelisted(t *testing.T) {
	hold := &reconcile.Hold{}
	x := newHost(t, routes.Options{Hold: hold})
	x.putSelfLease("198.18.1.0/24")
	x.putRecord(2, "app", "198.18.2.0/24")
	x.putLease(3, "198.18.3.0/24")
	x.once()
	r2, n2, f2 := triple(2, "198.18.2.0/24", "proto 76 ")
	r3, n3, f3 := triple(3, "198.18.3.0/24", "proto boot ")
	present := []func() error{x.present(ipRoute, r2, r3), x.present(ipNeigh, n2, n3), x.present(bridgeFDB, f2, f3)}
	for _, check := range present {
		if err := check(); err != nil {
			t.Fatal(err)
		}
	}

	self, ok := x.store.Lease(netip.MustParsePrefix("198.18.1.0/24"))
	if !ok {
		t.Fatal("self lease not in the store")
	}
	hold.Start(time.Hour) // ended by hand below: nothing here depends on timing
	x.store.ReplaceEtcd(state.EtcdView{
		Networks: map[string]registry.Network{},
		Leases:   map[netip.Prefix]state.Lease{self.Subnet: self},
		Hosts:    map[string]registry.HostRecord{},
	}, "test:relist after history loss")
	x.once()
	for _, check := range present {
		if err := check(); err != nil {
			t.Errorf("deleted while held: %v", err)
		}
	}

	hold.End()
	x.once()
	for _, check := range []func() error{
		x.gone(ipRoute, "198.18.2.0/24", "198.18.3.0/24"),
		x.gone(ipNeigh, "198.18.2.0 ", "198.18.3.0 "),
		x.gone(bridgeFDB, mac(2).String(), mac(3).String()),
	} {
		if err := check(); err != nil {
			t.Errorf("kept after the hold ended: %v", err)
		}
	}
}
