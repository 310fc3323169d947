package routes_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// Records and leases written to a real etcd flow through the etcd watcher
// and the store to the kernel, and their deletion removes the state.
func TestEtcdRecordsToKernel(t *testing.T) {
	x := newHost(t, routes.Options{})
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	w, err := etcdwatch.New(etcdwatch.Options{Client: cli, Keys: keys, Store: x.store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	x.start()

	rec, err := registry.EncodeNetwork(netRecord(2, "app", "198.18.2.0/24", mac(2)))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := flannel.Encode(flannel.NewVXLAN(peerIP(3), 1, mac(3)))
	if err != nil {
		t.Fatal(err)
	}
	// flanneld's own lease: the proof that we see its registry, so the
	// remote lease's route, neighbour and FDB entry are swept when it goes.
	vx, err := x.ns.Handle.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	own, err := flannel.Encode(flannel.NewVXLAN(localIP, 1, vx.Attrs().HardwareAddr))
	if err != nil {
		t.Fatal(err)
	}
	recKey, leaseKey := keys.Network("h2", "app"), keys.Subnet(netip.MustParsePrefix("198.18.3.0/24"))
	ownKey := keys.Subnet(netip.MustParsePrefix("198.18.1.0/24"))
	for k, v := range map[string][]byte{recKey: rec, leaseKey: lease, ownKey: own} {
		if _, err := cli.Put(ctx, k, string(v)); err != nil {
			t.Fatal(err)
		}
	}
	r2, n2, f2 := triple(2, "198.18.2.0/24", "proto 76 ")
	r3, n3, f3 := triple(3, "198.18.3.0/24", "proto boot ")
	x.eventually(5*time.Second, x.present(ipRoute, r2, r3), x.present(ipNeigh, n2, n3), x.present(bridgeFDB, f2, f3))

	for _, k := range []string{recKey, leaseKey} {
		if _, err := cli.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	x.eventually(5*time.Second, x.gone(ipRoute, "198.18.2.0/24", "198.18.3.0/24"),
		x.gone(ipNeigh, "198.18.2.0 ", "198.18.3.0 "), x.gone(bridgeFDB, mac(2).String(), mac(3).String()))
}
