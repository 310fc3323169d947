package e2e

// This file: etcd losing its data — wiped (restored from nothing) and
// restored from an older copy — with the registrars, flanneld and traffic
// running.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// wantedKeys are the keys every host's registrar keeps in etcd for nets:
// per network its record and its reservation, per host its host record.
func wantedKeys(nets []*testNet) []string {
	var keys []string
	hosts := map[string]bool{}
	for _, n := range nets {
		keys = append(keys, registrarPrefix+n.Host.Name+"/"+n.Name, flannelSubnets+strings.Replace(n.Subnet, "/", "-", 1))
		if !hosts[n.Host.Name] {
			hosts[n.Host.Name] = true
			keys = append(keys, registrarPrefix+"_hosts/"+n.Host.Name)
		}
	}
	slices.Sort(keys)
	return keys
}

// missingKeys returns which of keys etcd does not hold, read with cli.
func missingKeys(ctx context.Context, cli *clientv3.Client, keys []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k, clientv3.WithCountOnly())
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	var missing []string
	for i, r := range resp.Responses {
		if r.GetResponseRange().Count == 0 {
			missing = append(missing, keys[i])
		}
	}
	return missing, nil
}

// timeUntilPresent polls etcd every 20 ms until it holds every key, and
// returns how long that took (from the call).
func timeUntilPresent(t *testing.T, l *lab.Lab, keys []string, timeout time.Duration) time.Duration {
	t.Helper()
	cli, err := l.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	start := time.Now()
	var missing []string
	err = poll.Until(context.Background(), timeout, 20*time.Millisecond, func() error {
		var err error
		if missing, err = missingKeys(context.Background(), cli, keys); err != nil {
			return err
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing %v", missing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("records not back within %s: %v", timeout, err)
	}
	return time.Since(start)
}

// flannelNets are the hosts' flannel (docker0) subnets, for the route
// monitor: their routes are flanneld's, repaired by the registrars.
func flannelNets(t *testing.T, l *lab.Lab) []*testNet {
	t.Helper()
	var out []*testNet
	for _, h := range l.Hosts {
		s, err := h.FlannelSubnet()
		if err != nil {
			t.Fatal(err)
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("%s: FLANNEL_SUBNET %q: %v", h.Name, s, err)
		}
		out = append(out, &testNet{Host: h, Name: "flannel-" + h.Name, Subnet: p.Masked().String()})
	}
	return out
}

// flannelLeasesBack makes sure every host's flanneld lease is in etcd
// again for the scenarios that follow: flanneld renews its lease only
// shortly before it expires, so after a wipe it may not write it again by
// itself; a host whose lease is missing gets flanneld restarted (it takes
// the subnet of its subnet.env again).
func flannelLeasesBack(t *testing.T, l *lab.Lab, nets []*testNet) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nets {
		key := flannelSubnets + strings.Replace(n.Subnet, "/", "-", 1)
		if presentInEtcd(l, key) == nil {
			t.Logf("%s: flanneld's lease %s is in etcd", n.Host.Name, n.Subnet)
			continue
		}
		t.Logf("%s: flanneld's lease %s not in etcd after the fault: restarting flanneld", n.Host.Name, n.Subnet)
		if err := n.Host.Restart(ctx, lab.Flanneld); err != nil {
			t.Errorf("restart flanneld on %s: %v", n.Host.Name, err)
			continue
		}
		eventually(t, 30*time.Second, "flanneld's lease of "+n.Host.Name, func() error { return presentInEtcd(l, key) })
	}
}

// ownKeys returns every key under the registrar's prefix for host (records)
// and every reservation naming host, as key -> value.
func ownKeys(t *testing.T, l *lab.Lab, host string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		for _, p := range []string{registrarPrefix + host + "/", flannelSubnets} {
			resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
			if err != nil {
				return err
			}
			for _, kv := range resp.Kvs {
				v := string(kv.Value)
				if p == flannelSubnets && !strings.Contains(v, `"Host":"`+host+`"`) {
					continue
				}
				out[string(kv.Key)] = v
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkOwnKeys fails unless host's records and reservations in etcd are
// exactly those of nets (no stale record, no second reservation).
func checkOwnKeys(l *lab.Lab, host string, nets []*testNet, t *testing.T) error {
	var want []string
	for _, k := range wantedKeys(nets) {
		if !strings.Contains(k, "/_hosts/") {
			want = append(want, k)
		}
	}
	var got []string
	for k := range ownKeys(t, l, host) {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s's records and reservations %v, want %v", host, got, want)
	}
	return nil
}

// etcd comes back empty: every record, reservation and host record is back
// soon after etcd answers, no route to a remote network (ours or flannel's)
// is withdrawn on any host meanwhile, and traffic flows after.
func TestEtcdWipedReRegisters(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	nets := baseNets()
	keys := wantedKeys(nets)
	timeUntilPresent(t, l, keys, 30*time.Second)
	mon := watchRoutes(t, l, append(slices.Clone(nets), flannelNets(t, l)...))
	var took []string
	for run := range 2 {
		offsets := map[*lab.Host]int64{}
		for _, h := range l.Hosts {
			offsets[h] = logSize(h)
		}
		if err := l.WipeEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		d := timeUntilPresent(t, l, keys, 15*time.Second)
		took = append(took, d.Round(time.Millisecond).String())
		t.Logf("run %d: every record, reservation and host record back %s after etcd answered (empty)", run+1, d.Round(time.Millisecond))
		// The lease check on reconnect may have re-registered first; the
		// watcher's header check logs the loss within a second or two.
		for _, h := range l.Hosts {
			eventually(t, 15*time.Second, h.Name+` logs "etcd lost our data"`, func() error {
				if !strings.Contains(registrarLogSince(h, offsets[h]), "etcd lost our data") {
					return fmt.Errorf("not logged yet")
				}
				return nil
			})
		}
		// Let the hold after the re-list end while the monitor watches.
		wait(t, 8*time.Second)
	}
	fmt.Printf("e2e: etcd wiped: records back after %s\n", strings.Join(took, ", "))
	misses, polls := mon.stop()
	t.Logf("%d route checks across the wipes", polls)
	if len(misses) > 0 {
		t.Errorf("%d route checks failed, first: %s", len(misses), strings.Join(misses[:min(5, len(misses))], "\n"))
	}
	for _, n := range nets {
		if err := checkOwnKeys(l, n.Host.Name, []*testNet{n}, t); err != nil {
			t.Error(err)
		}
	}
	eventually(t, 30*time.Second, "all pairs after the wipe", func() error { return allPairs(ctx, nets) })
	flannelLeasesBack(t, l, flannelNets(t, l))
}

// etcd restored from an older copy of its data: the registrars converge to
// the current truth — the record of a network removed since the copy is
// deleted, the network created since is registered, nothing duplicated —
// and traffic flows.
func TestEtcdRestoredFromOlderSnapshot(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	h := l.Host(2)
	old, err := newNet(ctx, h, "snapold", "198.19.53.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cleanupIfThere(t, old)
	withOld := append(baseNets(), old)
	timeUntilPresent(t, l, wantedKeys(withOld), 30*time.Second)
	if err := l.SnapshotEtcd(ctx, "older"); err != nil {
		t.Fatal(err)
	}
	// After the copy: one network goes, another comes.
	if err := old.remove(ctx); err != nil {
		t.Fatal(err)
	}
	fresh, err := newNet(ctx, h, "snapnew", "198.19.54.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, fresh)
	now := append(baseNets(), fresh)
	timeUntilPresent(t, l, wantedKeys(now), 30*time.Second)
	eventually(t, 30*time.Second, "old network unregistered", func() error {
		return absentInEtcd(l, registrarPrefix+h.Name+"/"+old.Name, flannelSubnets+"198.19.53.0-24")
	})

	mon := watchRoutes(t, l, now)
	if err := l.RestoreEtcd(ctx, "older"); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	d := timeUntilPresent(t, l, wantedKeys(now), 15*time.Second)
	t.Logf("current records back %s after the older snapshot answered", d.Round(time.Millisecond))
	eventually(t, 15*time.Second, "stale record of the removed network deleted", func() error {
		return absentInEtcd(l, registrarPrefix+h.Name+"/"+old.Name, flannelSubnets+"198.19.53.0-24")
	})
	fmt.Printf("e2e: etcd restored from an older snapshot: current records after %s, stale ones gone after %s\n",
		d.Round(time.Millisecond), time.Since(restored).Round(time.Millisecond))
	for _, n := range now {
		var mine []*testNet
		for _, m := range now {
			if m.Host == n.Host {
				mine = append(mine, m)
			}
		}
		eventually(t, 15*time.Second, "exactly the current claims of "+n.Host.Name, func() error {
			return checkOwnKeys(l, n.Host.Name, mine, t)
		})
	}
	wait(t, 5*time.Second)
	if misses, _ := mon.stop(); len(misses) > 0 {
		t.Errorf("%d route checks failed, first: %s", len(misses), strings.Join(misses[:min(5, len(misses))], "\n"))
	}
	eventually(t, 30*time.Second, "all pairs after the restore", func() error { return allPairs(ctx, now) })
	flannelLeasesBack(t, l, flannelNets(t, l))
	eventually(t, 30*time.Second, "no route to the removed network", func() error {
		for _, x := range l.Hosts {
			if r, err := routeTo(x, old.Subnet); err != nil || r != "" {
				return fmt.Errorf("%s: route to %s: %q (err %w)", x.Name, old.Subnet, r, err)
			}
		}
		return nil
	})
}
