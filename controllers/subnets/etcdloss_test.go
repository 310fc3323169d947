package subnets_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// ownClaims lists host's records and the reservations naming it, each as
// "key@lease", sorted.
func ownClaims(t *testing.T, cli *clientv3.Client, host string) []string {
	t.Helper()
	var out []string
	for _, p := range []string{keys.HostNetworks(host), keys.Subnets()} {
		resp, err := cli.Get(context.Background(), p, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if p == keys.Subnets() && !strings.Contains(string(kv.Value), `"Host":"`+host+`"`) {
				continue
			}
			out = append(out, fmt.Sprintf("%s@%x", kv.Key, kv.Lease))
		}
	}
	slices.Sort(out)
	return out
}

// wantClaims is what ownClaims returns for host's networks, all on lease.
func wantClaims(host string, lease int64, nets map[string]string) []string {
	var out []string
	for name, cidr := range nets {
		out = append(out, fmt.Sprintf("%s@%x", keys.Network(host, name), lease),
			fmt.Sprintf("%s%s@%x", keys.Subnets(), strings.Replace(cidr, "/", "-", 1), lease))
	}
	slices.Sort(out)
	return out
}

// converged waits until host's claims in etcd are exactly nets, on one lease
// that etcd holds, and its host record is there.
func converged(t *testing.T, cli *clientv3.Client, host string, nets map[string]string) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, func() error {
		rec := value(t, cli, keys.Network(host, "app2"))
		if rec == "" {
			return fmt.Errorf("no record of app2")
		}
		lease := leaseOf(t, cli, keys.Network(host, "app2"))
		if got, want := ownClaims(t, cli, host), wantClaims(host, int64(lease), nets); !slices.Equal(got, want) {
			return fmt.Errorf("claims of %s:\n%s\nwant\n%s", host, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		ttl, err := cli.TimeToLive(context.Background(), lease)
		if err != nil || ttl.TTL <= 0 {
			return fmt.Errorf("lease %x of the records: TTL %v (err %w): etcd does not hold it", lease, ttl, err)
		}
		if value(t, cli, keys.Host(host)) == "" {
			return fmt.Errorf("no host record")
		}
		return nil
	})
}

// etcd comes back empty: every record, reservation and host record is
// written again, on a lease etcd holds.
func TestEtcdWipedReRegisters(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	store.SetLink(link(), "test")
	store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	store.PutLocal(local("app3", "198.19.3.0/24"), "test")
	startDaemon(t, srv, "h1", store)
	nets := map[string]string{"app2": "198.19.2.0/24", "app3": "198.19.3.0/24"}
	converged(t, cli, "h1", nets)
	srv.Wipe(t)
	back := time.Now()
	converged(t, cli, "h1", nets)
	t.Logf("records back %s after etcd answered (empty)", time.Since(back).Round(time.Millisecond))
}

// etcd restored from an older copy of its data (revision back, our stale
// record and reservation present on a lease the copy restored): the
// registrar converges to the current truth — the stale network's claims
// deleted, the current ones written again, nothing duplicated, everything
// on one live lease.
func TestEtcdRestoredFromOlderCopyConverges(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	store.SetLink(link(), "test")
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	startDaemon(t, srv, "h1", store)
	converged(t, cli, "h1", map[string]string{"app1": "198.19.1.0/24", "app2": "198.19.2.0/24"})

	snap := filepath.Join(t.TempDir(), "copy")
	srv.Stop()
	copyDir(t, srv.Dir(), snap)
	srv.Restart(t)
	// After the copy: app1 goes, app3 comes.
	store.DeleteLocal("app1", "test")
	store.PutLocal(local("app3", "198.19.3.0/24"), "test")
	now := map[string]string{"app2": "198.19.2.0/24", "app3": "198.19.3.0/24"}
	converged(t, cli, "h1", now)

	srv.Stop()
	if err := os.RemoveAll(srv.Dir()); err != nil {
		t.Fatal(err)
	}
	copyDir(t, snap, srv.Dir())
	srv.Restart(t)
	back := time.Now()
	converged(t, cli, "h1", now)
	t.Logf("converged %s after the older copy answered", time.Since(back).Round(time.Millisecond))
}

// copyDir copies a stopped member's data directory as an operator does.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}
