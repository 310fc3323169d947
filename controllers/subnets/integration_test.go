package subnets_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// daemon is the control plane of one host as the app wires it: store, etcd
// watcher, registry with its keep-alive loop, subnets controller and manager.
type daemon struct {
	store *state.Store
	ctrl  *subnets.Controller
	mgr   *reconcile.Manager
	w     *etcdwatch.Watcher
	stop  func()
}

func startDaemon(t *testing.T, srv *etcdtest.Server, host string, store *state.Store, opts ...func(*subnets.Options)) *daemon {
	t.Helper()
	cli, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr := reconcile.NewManager(0, slog.New(slog.DiscardHandler))
	reg, err := registry.New(registry.Config{
		Client: cli, Keys: keys, Host: host,
		RegistrationTTL: time.Hour, HostLivenessTTL: 15 * time.Second,
		OnLeaseLost: func(string) { _ = mgr.ResyncOne(ctx, subnets.Name, "etcd:lease-lost") },
	})
	if err != nil {
		t.Fatal(err)
	}
	o := subnets.Options{Store: store, Registry: reg, Version: "test", Enqueuer: mgr}
	for _, opt := range opts {
		opt(&o)
	}
	ctrl, err := subnets.New(o)
	if err != nil {
		t.Fatal(err)
	}
	mgr.Add(ctrl, reconcile.Options{BaseBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	store.Subscribe(func(ev state.Event) {
		for _, k := range ctrl.KeysFor(ev) {
			mgr.Enqueue(subnets.Name, k, ev.Trigger)
		}
	})
	// As the app wires it (cmd/flannel-registrar/app/etcdloss.go): etcd lost
	// our data, so drop the leases it lost and write everything again.
	w, err := etcdwatch.New(etcdwatch.Options{Client: cli, Keys: keys, Store: store,
		OnHistoryLost: func(etcdwatch.HistoryLoss) {
			reg.CheckLeases(ctx)
			_ = mgr.ResyncOne(ctx, subnets.Name, "etcd:history-lost")
		}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	wg.Go(func() { _ = reg.Run(ctx) })
	testutil.Eventually(t, 10*time.Second, func() error {
		if !store.Synced("etcd") {
			return fmt.Errorf("etcd not synced")
		}
		return nil
	})
	wg.Go(func() { mgr.Run(ctx) })
	d := &daemon{store: store, ctrl: ctrl, mgr: mgr, w: w}
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			_ = cli.Close()
		})
	}
	t.Cleanup(d.stop)
	return d
}

func waitValue(t *testing.T, cli *clientv3.Client, key string, present bool) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, 15*time.Second, func() error {
		v := value(t, cli, key)
		if (v != "") != present {
			return fmt.Errorf("%s = %q, want present=%v", key, v, present)
		}
		return nil
	})
	return time.Since(start)
}

func TestDaemonRegistersRepairsAndSurvivesEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	store.SetLink(link(), "test")
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	startDaemon(t, srv, "h1", store)

	res1 := keys.Subnet(netip.MustParsePrefix("198.19.1.0/24"))
	waitValue(t, cli, res1, true)
	waitValue(t, cli, keys.Host("h1"), true)

	// A reservation deleted by hand comes back from the watch event, not a resync.
	if _, err := cli.Delete(context.Background(), res1); err != nil {
		t.Fatal(err)
	}
	t.Logf("hand-deleted reservation restored in %s", waitValue(t, cli, res1, true))

	// A new local network is registered; a removed one is unregistered.
	start := time.Now()
	store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	waitValue(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.2.0/24")), true)
	t.Logf("local network to reservation in etcd: %s", time.Since(start))
	store.DeleteLocal("app1", "test")
	waitValue(t, cli, res1, false)
	waitValue(t, cli, keys.Network("h1", "app1"), false)

	// etcd goes away and comes back; a network created during the outage is
	// registered after it, and other hosts' changes reach the store.
	t0 := time.Now()
	srv.Stop()
	t.Logf("stop took %s", time.Since(t0))
	store.PutLocal(local("app3", "198.19.3.0/24"), "test")
	t0 = time.Now()
	srv.Restart(t)
	t.Logf("restart took %s", time.Since(t0))
	t.Logf("network created during the outage registered %s after etcd returned",
		waitValue(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.3.0/24")), true))
	if _, err := cli.Put(context.Background(), keys.Subnet(netip.MustParsePrefix("10.5.35.0/24")),
		`{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:de"}}`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		if _, ok := store.Lease(netip.MustParsePrefix("10.5.35.0/24")); !ok {
			return fmt.Errorf("lease written after the restart not in the store")
		}
		return nil
	})
}

// TestDaemonRestartNoDeletes: the registrar stops and a new one starts (new
// lease); a peer watching the prefixes sees no DELETE, and the records end up
// on the new lease.
func TestDaemonRestartNoDeletes(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	newStore := func() *state.Store {
		s := state.New()
		s.SetLink(link(), "test")
		s.PutLocal(local("app1", "198.19.1.0/24"), "test")
		s.PutLocal(local("app2", "198.19.2.0/24"), "test")
		return s
	}
	first := startDaemon(t, srv, "h1", newStore())
	waitValue(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.2.0/24")), true)
	waitValue(t, cli, keys.Network("h1", "app1"), true)
	oldLease := leaseOf(t, cli, keys.Network("h1", "app1"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := cli.Watch(ctx, "/", clientv3.WithPrefix(), clientv3.WithRev(srv.Revision(t)+1))
	first.stop()
	startDaemon(t, srv, "h1", newStore())
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, key := range []string{keys.Network("h1", "app1"), keys.Network("h1", "app2"),
			keys.Subnet(netip.MustParsePrefix("198.19.1.0/24")), keys.Subnet(netip.MustParsePrefix("198.19.2.0/24"))} {
			if l := leaseOf(t, cli, key); l == oldLease || l == 0 {
				return fmt.Errorf("%s still on lease %x", key, l)
			}
		}
		return nil
	})
	// The old lease expires (revoked here to not wait an hour): nothing goes.
	if _, err := cli.Revoke(context.Background(), oldLease); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), "/marker", "x"); err != nil {
		t.Fatal(err)
	}
	for wr := range wch {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.Errorf("DELETE %s across the restart", ev.Kv.Key)
			}
			if string(ev.Kv.Key) == "/marker" {
				cancel()
			}
		}
	}
}

func leaseOf(t *testing.T, cli *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// TestTwoDaemonsRaceForOneSubnet: two hosts register the same subnet at the
// same time; exactly one holds it, the other reports a conflict and has no
// record.
func TestTwoDaemonsRaceForOneSubnet(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	var ds []*daemon
	for _, h := range []string{"h1", "h2"} {
		s := state.New()
		s.SetLink(link(), "test")
		ds = append(ds, startDaemon(t, srv, h, s))
	}
	for i, d := range ds {
		d.store.PutLocal(local(fmt.Sprintf("net%d", i), "198.19.5.0/24"), "test")
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		if n := ds[0].ctrl.ConflictCount() + ds[1].ctrl.ConflictCount(); n != 1 {
			return fmt.Errorf("%d conflicts, want exactly 1", n)
		}
		return nil
	})
	winner, loser := 0, 1
	if ds[0].ctrl.ConflictCount() == 1 {
		winner, loser = 1, 0
	}
	hosts := []string{"h1", "h2"}
	if value(t, cli, keys.Network(hosts[loser], fmt.Sprintf("net%d", loser))) != "" {
		t.Error("the loser has a record")
	}
	if value(t, cli, keys.Network(hosts[winner], fmt.Sprintf("net%d", winner))) == "" {
		t.Error("the winner has no record")
	}
}

// TestDuplicateHostNameDaemons: two hosts configured with the same host name
// (cloned VMs) and different identities share one etcd. Neither ever deletes
// or overwrites the other's entries, and both report the duplicate.
func TestDuplicateHostNameDaemons(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := context.Background()
	start := srv.Revision(t) + 1
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, "/", clientv3.WithPrefix(), clientv3.WithRev(start))

	linkB := link()
	linkB.Local = netip.MustParseAddr("198.51.100.2")
	linkB.MAC = net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02}
	var ds []*daemon
	for _, l := range []state.Link{link(), linkB} {
		s := state.New()
		s.SetLink(l, "test")
		ds = append(ds, startDaemon(t, srv, "h1", s))
	}
	ds[0].store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	ds[1].store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	for _, d := range ds { // the cloned network
		d.store.PutLocal(local("shared", "198.19.3.0/24"), "test")
	}
	ips := []string{"198.51.100.1", "198.51.100.2"}
	testutil.Eventually(t, 15*time.Second, func() error {
		for i, d := range ds {
			if err := d.mgr.ResyncOne(ctx, subnets.Name, "test"); err != nil {
				return err
			}
			dups := d.ctrl.Duplicates()
			if len(dups) != 1 || dups[0].PublicIP != ips[1-i] {
				return fmt.Errorf("daemon %d duplicates = %+v, want the other one", i, dups)
			}
		}
		for key, ip := range map[string]string{
			keys.Network("h1", "app1"): ips[0], keys.Network("h1", "app2"): ips[1],
		} {
			if v := value(t, cli, key); !strings.Contains(v, `"PublicIP":"`+ip+`"`) {
				return fmt.Errorf("%s = %q, want PublicIP %s", key, v, ip)
			}
		}
		if n := ds[0].ctrl.ConflictCount() + ds[1].ctrl.ConflictCount(); n != 1 {
			return fmt.Errorf("%d conflicts, want 1 (the shared network of the later one)", n)
		}
		return nil
	})
	// The host record's counts follow the conflicts asynchronously (the
	// controller re-queues _host when they change): let that settle with
	// passes that may still update it, then require quiet passes.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, d := range ds {
			ks, err := d.ctrl.Keys(ctx)
			if err != nil {
				return err
			}
			for _, k := range ks {
				if got := reconcileKey(t, d.ctrl, k); len(got) != 0 {
					return fmt.Errorf("resync of %s still changes: %v", k, got)
				}
			}
		}
		return nil
	})
	// Resyncs run here, synchronously, then a marker bounds the history: not
	// a single DELETE, and each record was written once.
	for range 3 {
		for _, d := range ds {
			ks, err := d.ctrl.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range ks {
				if got := reconcileKey(t, d.ctrl, k); len(got) != 0 {
					t.Errorf("resync of %s changed something: %v", k, got)
				}
			}
		}
	}
	mustPutMarker(t, cli)
	puts := map[string]int{}
	for wr := range wch {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.Errorf("DELETE %s", ev.Kv.Key)
			}
			if string(ev.Kv.Key) == "/marker" {
				wcancel()
			}
			puts[string(ev.Kv.Key)]++
		}
	}
	for _, key := range []string{keys.Network("h1", "app1"), keys.Network("h1", "app2"), keys.Network("h1", "shared")} {
		if puts[key] != 1 {
			t.Errorf("%s written %d times, want once", key, puts[key])
		}
	}
}

func mustPutMarker(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	if _, err := cli.Put(context.Background(), "/marker", "x"); err != nil {
		t.Fatal(err)
	}
}
