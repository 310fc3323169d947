package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

var keys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

type hooks struct{ lost atomic.Int32 }

func newRegistry(t *testing.T, cli *clientv3.Client, host string) (*registry.Registry, *hooks) {
	t.Helper()
	h := &hooks{}
	r, err := registry.New(registry.Config{
		Client: cli, Keys: keys, Host: host,
		RegistrationTTL: time.Hour, HostLivenessTTL: 15 * time.Second,
		OnLeaseLost: func(string) { h.lost.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, h
}

// runRegistry runs r.Run until the test ends and joins it.
func runRegistry(t *testing.T, r *registry.Registry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry Run: %v", err)
		}
	})
}

func network(host, name, cidr string) registry.Network {
	mac, _ := net.ParseMAC("c6:a7:e4:a5:a1:dd")
	p := netip.MustParsePrefix(cidr)
	return registry.Network{
		Host: host, Network: name, NetworkID: "id-" + name, Subnet: p,
		Gateway:  p.Addr().Next(),
		PublicIP: netip.MustParseAddr("198.51.100.1"), VtepMAC: mac, VNI: 1,
	}
}

// ident is the identity network() publishes.
var ident = registry.Identity{PublicIP: netip.MustParseAddr("198.51.100.1"), VtepMAC: net.HardwareAddr{0xc6, 0xa7, 0xe4, 0xa5, 0xa1, 0xdd}}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func get(t *testing.T, cli *clientv3.Client, key string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func TestPutNetworkCreateUnchangedUpdate(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	n := network("h1", "app1", "198.19.1.0/24")

	res, err := r.PutNetwork(ctx, n)
	if err != nil || res.Change != registry.Created {
		t.Fatalf("first put = %+v, %v; want created", res, err)
	}
	rec := get(t, cli, keys.Network("h1", "app1"))
	resv := get(t, cli, keys.Subnet(n.Subnet))
	if rec == nil || resv == nil {
		t.Fatalf("record %v reservation %v: want both", rec, resv)
	}
	wantRec := `{"Host":"h1","Network":"app1","NetworkID":"id-app1","Subnet":"198.19.1.0/24","Gateway":"198.19.1.1","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
	if string(rec.Value) != wantRec {
		t.Errorf("record = %s\nwant     %s", rec.Value, wantRec)
	}
	wantRes := `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"app1"}}`
	if string(resv.Value) != wantRes {
		t.Errorf("reservation = %s\nwant          %s", resv.Value, wantRes)
	}
	if rec.Lease == 0 || rec.Lease != resv.Lease || clientv3.LeaseID(rec.Lease) != r.Lease() {
		t.Errorf("leases record %x reservation %x registry %x: want the same, non-zero", rec.Lease, resv.Lease, r.Lease())
	}
	ttl, err := cli.TimeToLive(ctx, r.Lease())
	if err != nil || ttl.GrantedTTL != 3600 {
		t.Errorf("lease TTL = %+v, %v; want granted 3600", ttl, err)
	}

	rev := srv.Revision(t)
	res, err = r.PutNetwork(ctx, n)
	if err != nil || res.Change != registry.Unchanged {
		t.Fatalf("second put = %+v, %v; want unchanged", res, err)
	}
	if got := srv.Revision(t); got != rev {
		t.Errorf("an unchanged put wrote: revision %d -> %d", rev, got)
	}

	n.VtepMAC, _ = net.ParseMAC("aa:bb:cc:dd:ee:01")
	res, err = r.PutNetwork(ctx, n)
	if err != nil || res.Change != registry.Updated || !slices.Equal(res.Fields, []string{"VtepMAC"}) {
		t.Fatalf("update = %+v, %v; want updated [VtepMAC]", res, err)
	}
	got, err := registry.DecodeNetwork(get(t, cli, keys.Network("h1", "app1")).Value)
	if err != nil || got.VtepMAC.String() != "aa:bb:cc:dd:ee:01" {
		t.Errorf("record after update = %+v, %v", got, err)
	}
}

func TestDeleteNetwork(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	n := network("h1", "app1", "198.19.1.0/24")
	if _, err := r.PutNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	res, err := r.DeleteNetwork(ctx, "app1", ident)
	if err != nil || !res.Record || !slices.Equal(res.Reservations, []netip.Prefix{n.Subnet}) || res.Subnet() != n.Subnet {
		t.Fatalf("delete = %+v, %v; want record and reservation", res, err)
	}
	if get(t, cli, keys.Network("h1", "app1")) != nil || get(t, cli, keys.Subnet(n.Subnet)) != nil {
		t.Fatal("record or reservation left after delete")
	}
	res, err = r.DeleteNetwork(ctx, "app1", ident, n.Subnet)
	if err != nil || res.Deleted() {
		t.Fatalf("second delete = %+v, %v; want nothing deleted", res, err)
	}
}

func TestDeleteNetworkOrphanReservationAndForeignKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	s1, s2 := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.2.0/24")
	own, _ := flannel.Encode(flannel.NewReservation("h1", "app1"))
	foreign, _ := flannel.Encode(flannel.NewReservation("h2", "app1"))
	mustPut(t, cli, keys.Subnet(s1), string(own))
	mustPut(t, cli, keys.Subnet(s2), string(foreign))
	res, err := r.DeleteNetwork(ctx, "app1", ident, s1, s2)
	if err != nil || res.Record || !slices.Equal(res.Reservations, []netip.Prefix{s1}) {
		t.Fatalf("delete = %+v, %v; want only the reservation at %s", res, err, s1)
	}
	if get(t, cli, keys.Subnet(s1)) != nil {
		t.Error("our orphan reservation was not deleted")
	}
	if kv := get(t, cli, keys.Subnet(s2)); kv == nil || string(kv.Value) != string(foreign) {
		t.Errorf("another host's reservation was touched: %v", kv)
	}
}

func mustPut(t *testing.T, cli *clientv3.Client, key, val string) *clientv3.PutResponse {
	t.Helper()
	resp, err := cli.Put(ctxT(t), key, val)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestTwoHostsClaimOneSubnet(t *testing.T) {
	srv := etcdtest.Start(t)
	r1, _ := newRegistry(t, srv.Client(t), "h1")
	r2, _ := newRegistry(t, srv.Client(t), "h2")
	cli := srv.Client(t)
	ctx := ctxT(t)
	if _, err := r1.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	before := dump(t, cli)
	_, err := r2.PutNetwork(ctx, network("h2", "web", "198.19.1.0/24"))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("second host's put = %v; want a ConflictError", err)
	}
	want := registry.ConflictError{
		Subnet: netip.MustParsePrefix("198.19.1.0/24"), Network: "web",
		Claimant: "host h1 network app1", Key: "/coreos.com/network/subnets/198.19.1.0-24",
	}
	if *ce != want {
		t.Errorf("conflict = %+v\nwant       %+v", *ce, want)
	}
	if after := dump(t, cli); after != before {
		t.Errorf("etcd changed by a refused claim:\nbefore %s\nafter  %s", before, after)
	}
}

// dump renders every key with value, revisions and lease, byte for byte.
func dump(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	resp, err := cli.Get(ctxT(t), "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, kv := range resp.Kvs {
		s += fmt.Sprintf("%s=%q c%d m%d l%x\n", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Lease)
	}
	return s
}

func TestConflictWithFlannelLeaseAndGarbage(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	mac, _ := net.ParseMAC("c6:a7:e4:a5:a1:dd")
	vx, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.9"), 1, mac))
	for _, tc := range []struct{ value, claimant string }{
		{string(vx), "a flannel vxlan lease of PublicIP 198.51.100.9"},
		{"not json", "an unparsable value"},
		{`{"PublicIP":"0.0.0.0","BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"other"}}`, "this host's network other"},
	} {
		mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.1.0/24")), tc.value)
		before := dump(t, cli)
		_, err := r.PutNetwork(ctxT(t), network("h1", "app1", "198.19.1.0/24"))
		var ce *registry.ConflictError
		if !errors.As(err, &ce) || len(ce.Claimant) < len(tc.claimant) || ce.Claimant[:len(tc.claimant)] != tc.claimant {
			t.Errorf("put over %s = %v; want conflict with %q", tc.value, err, tc.claimant)
		}
		if after := dump(t, cli); after != before {
			t.Errorf("etcd changed by a refused claim:\nbefore %s\nafter  %s", before, after)
		}
	}
}

func TestConflictWithdrawsOurRecord(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	n := network("h1", "app1", "198.19.1.0/24")
	if _, err := r.PutNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	// h2 won a race (or our reservation was replaced by hand): the
	// reservation decides, our record goes.
	foreign, _ := flannel.Encode(flannel.NewReservation("h2", "web"))
	mustPut(t, cli, keys.Subnet(n.Subnet), string(foreign))
	_, err := r.PutNetwork(ctx, n)
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || !ce.Withdrawn {
		t.Fatalf("put = %v; want a conflict with Withdrawn", err)
	}
	if get(t, cli, keys.Network("h1", "app1")) != nil {
		t.Error("our record is still there")
	}
	if kv := get(t, cli, keys.Subnet(n.Subnet)); kv == nil || string(kv.Value) != string(foreign) {
		t.Errorf("the winner's reservation was touched: %v", kv)
	}
	// Once the winner is gone, we register again.
	if _, err := cli.Delete(ctx, keys.Subnet(n.Subnet)); err != nil {
		t.Fatal(err)
	}
	if res, err := r.PutNetwork(ctx, n); err != nil || res.Change != registry.Created {
		t.Fatalf("put after the conflict cleared = %+v, %v; want created", res, err)
	}
}

func TestSubnetMoves(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	res, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.2.0/24"))
	if err != nil || res.Change != registry.Updated || !slices.Contains(res.Fields, "old reservation 198.19.1.0/24") {
		t.Fatalf("move = %+v, %v", res, err)
	}
	if get(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.1.0/24"))) != nil {
		t.Error("old reservation left behind")
	}
	if get(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.2.0/24"))) == nil {
		t.Error("new reservation missing")
	}
}

// TestRestartReattachesWithoutDeletes simulates a registrar restart: a new
// client and registry (new lease) put the same networks; the old lease then
// expires (revoked here). Watchers must see PUTs only, never a DELETE.
func TestRestartReattachesWithoutDeletes(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	nets := []registry.Network{network("h1", "app1", "198.19.1.0/24"), network("h1", "app2", "198.19.2.0/24")}

	old, _ := newRegistry(t, srv.Client(t), "h1")
	for _, n := range nets {
		if _, err := old.PutNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	oldLease := old.Lease()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	start := srv.Revision(t) + 1
	wch := cli.Watch(wctx, "/", clientv3.WithPrefix(), clientv3.WithRev(start))

	restarted, _ := newRegistry(t, srv.Client(t), "h1")
	for _, n := range nets {
		res, err := restarted.PutNetwork(ctx, n)
		if err != nil || res.Change != registry.Reattached {
			t.Fatalf("put after restart = %+v, %v; want re-attached", res, err)
		}
	}
	if _, err := cli.Revoke(ctx, oldLease); err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		for _, key := range []string{keys.Network("h1", n.Network), keys.Subnet(n.Subnet)} {
			kv := get(t, cli, key)
			if kv == nil || clientv3.LeaseID(kv.Lease) != restarted.Lease() {
				t.Errorf("%s = %v; want it on the new lease %x", key, kv, restarted.Lease())
			}
		}
	}
	// A marker write bounds the watch: everything before it has been seen.
	mustPut(t, cli, "/marker", "x")
	puts := 0
	for wr := range wch {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.Errorf("DELETE %s during the restart", ev.Kv.Key)
			}
			if string(ev.Kv.Key) == "/marker" {
				wcancel()
			} else {
				puts++
			}
		}
	}
	if puts != 4 {
		t.Errorf("saw %d PUTs, want 4 (2 records, 2 reservations)", puts)
	}
}

func TestLeaseLostViaKeepAlive(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	h := &hooks{}
	// The client sends a keep-alive every TTL/3: a short TTL makes the loss
	// visible within a second.
	r, err := registry.New(registry.Config{
		Client: srv.Client(t), Keys: keys, Host: "h1",
		RegistrationTTL: 3 * time.Second, HostLivenessTTL: 3 * time.Second,
		OnLeaseLost: func(string) { h.lost.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	runRegistry(t, r)
	ctx := ctxT(t)
	n := network("h1", "app1", "198.19.1.0/24")
	if _, err := r.PutNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	lease := r.Lease()
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.lost.Load() == 0 || r.Lease() != 0 {
			return fmt.Errorf("lost %d, lease %x: hook not called yet", h.lost.Load(), r.Lease())
		}
		return nil
	})
	res, err := r.PutNetwork(ctx, n)
	if err != nil || res.Change != registry.Created || r.Lease() == lease {
		t.Fatalf("put after loss = %+v, %v (lease %x, old %x); want created on a new lease", res, err, r.Lease(), lease)
	}
}

func TestLeaseLostDuringWrite(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, h := newRegistry(t, srv.Client(t), "h1") // no Run: only the write notices
	ctx := ctxT(t)
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	lease := r.Lease()
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	res, err := r.PutNetwork(ctx, network("h1", "app2", "198.19.2.0/24"))
	if err != nil || res.Change != registry.Created {
		t.Fatalf("put = %+v, %v; want created", res, err)
	}
	if h.lost.Load() != 1 || r.Lease() == lease {
		t.Errorf("lost hook calls %d, lease %x (old %x); want 1 and a new lease", h.lost.Load(), r.Lease(), lease)
	}
}

func TestKeepAliveKeepsRecords(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, err := registry.New(registry.Config{
		Client: srv.Client(t), Keys: keys, Host: "h1",
		RegistrationTTL: 2 * time.Second, HostLivenessTTL: 2 * time.Second,
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
	// Three TTLs later the records are still there: the keep-alive works.
	timer := time.NewTimer(6 * time.Second)
	defer timer.Stop()
	<-timer.C
	for _, key := range []string{keys.Network("h1", "app1"), keys.Host("h1")} {
		if get(t, cli, key) == nil {
			t.Errorf("%s expired although kept alive", key)
		}
	}
}

func TestOwnNetworks(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	orphan, _ := flannel.Encode(flannel.NewReservation("h1", "gone"))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.9.0/24")), string(orphan))
	mustPut(t, cli, keys.Network("h1", "recordonly"), "garbage")
	foreign, _ := flannel.Encode(flannel.NewReservation("h2", "theirs"))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.8.0/24")), string(foreign))
	mustPut(t, cli, keys.Network("h2", "theirs"), "{}")
	mustPut(t, cli, keys.Network("h10", "prefix-sibling"), "{}")
	names, _, err := r.OwnNetworks(ctx, ident)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app1", "gone", "recordonly"}; !slices.Equal(names, want) {
		t.Errorf("own networks = %v, want %v", names, want)
	}
	owned, _, err := r.Owned(ctx, ident)
	if err != nil {
		t.Fatal(err)
	}
	if got := owned["gone"]; len(got) != 1 || got[0] != netip.MustParsePrefix("198.19.9.0/24") {
		t.Errorf("owned[gone] = %v", got)
	}
}

func TestPutHost(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, _ := newRegistry(t, cli, "h1")
	ctx := ctxT(t)
	h := registry.HostRecord{Host: "h1", PublicIP: "198.51.100.1", VtepMAC: "c6:a7:e4:a5:a1:dd", VNI: 1, Networks: 2}
	if wrote, err := r.PutHost(ctx, h); err != nil || !wrote {
		t.Fatalf("put host = %v, %v", wrote, err)
	}
	if wrote, err := r.PutHost(ctx, h); err != nil || wrote {
		t.Fatalf("same put host = %v, %v; want no write", wrote, err)
	}
	kv := get(t, cli, keys.Host("h1"))
	got, err := registry.DecodeHost(kv.Value)
	if err != nil || got != h {
		t.Fatalf("host record = %+v, %v", got, err)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
	if err != nil || ttl.GrantedTTL != 15 {
		t.Errorf("host lease = %+v, %v; want TTL 15", ttl, err)
	}
	if _, err := r.PutHost(ctx, registry.HostRecord{Host: "h2"}); err == nil {
		t.Error("put of another host's record accepted")
	}
}

func TestNewValidates(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	for _, cfg := range []registry.Config{
		{Keys: keys, Host: "h1", RegistrationTTL: time.Hour, HostLivenessTTL: time.Minute},
		{Client: cli, Keys: keys, Host: "", RegistrationTTL: time.Hour, HostLivenessTTL: time.Minute},
		{Client: cli, Keys: keys, Host: "_hosts", RegistrationTTL: time.Hour, HostLivenessTTL: time.Minute},
		{Client: cli, Keys: keys, Host: "a/b", RegistrationTTL: time.Hour, HostLivenessTTL: time.Minute},
		{Client: cli, Keys: keys, Host: "h1", HostLivenessTTL: time.Minute},
	} {
		if _, err := registry.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
