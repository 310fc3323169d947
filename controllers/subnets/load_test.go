package subnets_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// etcdRequests sums etcd's own counter of received gRPC messages (its
// /metrics on the client URL), leaving out lease keep-alives.
func etcdRequests(t *testing.T, srv *etcdtest.Server) float64 {
	t.Helper()
	resp, err := http.Get(srv.Endpoints()[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	total, seen := 0.0, false
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "grpc_server_msg_received_total{")
		if !ok {
			continue
		}
		seen = true
		labels, val, _ := strings.Cut(rest, "} ")
		if strings.Contains(labels, `grpc_method="LeaseKeepAlive"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		total += v
	}
	if !seen {
		t.Fatal("etcd /metrics has no grpc_server_msg_received_total")
	}
	return total
}

// The periodic resync reads the snapshot the watch keeps: once registered,
// resyncs of the host record and the local networks send etcd nothing (the
// cluster's size, here 300 other hosts' records, does not matter), while a
// change still reaches etcd.
func TestResyncSendsEtcdNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	for i := range 300 {
		k := keys.Network(fmt.Sprintf("peer%d", i), "net")
		v := fmt.Sprintf(`{"Host":"peer%d","Network":"net","Subnet":"198.18.%d.%d/30","PublicIP":"198.51.100.9","VtepMAC":"aa:bb:cc:00:01:02","VNI":1}`, i, i/64, (i%64)*4)
		if _, err := cli.Put(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	store := state.New()
	store.SetLink(link(), "test")
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	d := startDaemon(t, srv, "h1", store)
	waitValue(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.2.0/24")), true)
	waitValue(t, cli, keys.Host("h1"), true)
	ctx := context.Background()
	resync := func() error {
		ks, err := d.ctrl.Keys(ctx)
		if err != nil {
			return err
		}
		for _, k := range ks {
			if got := reconcileKey(t, d.ctrl, k); len(got) != 0 {
				return fmt.Errorf("resync of %s changed %v", k, got)
			}
		}
		return nil
	}
	// Let the start-up writes reach the snapshot and settle. A resync that
	// changes nothing is not enough: before the watch has shown our records,
	// a registration finds them in etcd (its transaction changes nothing)
	// but still costs a request.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, name := range []string{"app1", "app2"} {
			if _, ok := store.Network(keys.Network("h1", name)); !ok {
				return fmt.Errorf("record of %s not in the snapshot yet", name)
			}
		}
		if _, ok := store.Host("h1"); !ok {
			return fmt.Errorf("host record not in the snapshot yet")
		}
		return resync()
	})
	before := etcdRequests(t, srv)
	for range 3 {
		if err := resync(); err != nil {
			t.Fatal(err)
		}
	}
	if n := etcdRequests(t, srv) - before; n != 0 {
		t.Errorf("3 resyncs sent etcd %.0f requests (keep-alives left out), want 0", n)
	}
	// A hand-deleted record is still repaired (the watch's event).
	if _, err := cli.Delete(ctx, keys.Network("h1", "app1")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, cli, keys.Network("h1", "app1"), true)
}
