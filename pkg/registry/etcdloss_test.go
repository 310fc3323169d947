package registry_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// etcd comes back empty (same address, same cluster ID, revisions from 1):
// the leases are checked on the first connection after it returns and
// dropped, with TTLs so long that no keep-alive would notice for minutes.
func TestLeasesCheckedWhenEtcdReturnsEmpty(t *testing.T) {
	srv := etcdtest.Start(t)
	h := &hooks{}
	r, err := registry.New(registry.Config{
		Client: srv.Client(t), Keys: keys, Host: "h1",
		RegistrationTTL: time.Hour, HostLivenessTTL: time.Hour,
		OnLeaseLost: func(string) { h.lost.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	runRegistry(t, r)
	ctx := ctxT(t)
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutHost(ctx, registry.HostRecord{Host: "h1", PublicIP: "198.51.100.1"}); err != nil {
		t.Fatal(err)
	}
	reg, host := r.Lease(), r.HostLease()
	srv.Wipe(t)
	testutil.Eventually(t, 15*time.Second, func() error {
		if h.lost.Load() != 2 || r.Lease() != 0 || r.HostLease() != 0 {
			return fmt.Errorf("lost hook calls %d, leases %x %x (were %x %x): want both dropped", h.lost.Load(), r.Lease(), r.HostLease(), reg, host)
		}
		return nil
	})

	// A lease etcd still holds survives a reconnect.
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	cur := r.Lease()
	srv.Restart(t)
	r.CheckLeases(ctx)
	if r.Lease() != cur || h.lost.Load() != 2 {
		t.Errorf("lease %x (want %x kept), lost hook calls %d (want 2) after a restart with the data kept", r.Lease(), cur, h.lost.Load())
	}
}
