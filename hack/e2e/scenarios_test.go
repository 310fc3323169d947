package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	flannelSubnets  = lab.FlannelPrefix + "/subnets/"
	registrarPrefix = "/flannel/network/subnets/"
)

// Custom networks on three hosts: every pair reachable (ping and TCP), and
// the receiver sees the sender's container address.
func TestAllPairsReachable(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	for _, n := range baseNets() {
		eventually(t, 60*time.Second, "route to "+n.Subnet, func() error { return routedEverywhere(l, n) })
	}
	eventually(t, 30*time.Second, "all pairs", func() error { return allPairs(ctx, baseNets()) })
}

// A network created while everything runs becomes reachable from the other
// hosts; `docker network rm` removes its routes (and etcd entries) everywhere.
func TestNetworkCreatedAtRuntime(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	n := &testNet{Host: l.Host(2), Name: "rt", Subnet: "198.19.50.0/24", Container: "c-rt"}
	if err := n.Host.CreateNetwork(ctx, n.Name, n.Subnet); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	eventually(t, 30*time.Second, "route to the new network", func() error { return routedEverywhere(l, n) })
	t.Logf("route on every other host within %s after create", time.Since(created).Round(time.Millisecond))
	ip, err := n.Host.RunContainer(ctx, n.Container, n.Name)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	eventually(t, 30*time.Second, "reach the new network", func() error {
		return allPairs(ctx, []*testNet{base[1], base[3], n})
	})

	if err := n.remove(ctx); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	eventually(t, 30*time.Second, "routes removed", func() error {
		for _, h := range l.Hosts {
			r, err := routeTo(h, n.Subnet)
			if err != nil {
				return fmt.Errorf("%s: read routes: %w", h.Name, err)
			}
			if r != "" {
				return fmt.Errorf("%s still routes %s: %s", h.Name, n.Subnet, r)
			}
		}
		return nil
	})
	t.Logf("routes gone everywhere %s after rm", time.Since(removed).Round(time.Millisecond))
	eventually(t, 10*time.Second, "etcd entries removed", func() error {
		return absentInEtcd(l, flannelSubnets+"198.19.50.0-24", registrarPrefix+"h2/rt")
	})
}

// flanneld restarted on a host does not adopt a registered network as its
// own subnet (subnet.env and flannel.1's address stay its own), and traffic
// to and from that host still flows.
func TestFlanneldRestart(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	h := l.Host(1)
	before, err := h.FlannelSubnet()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Restart(ctx, lab.Flanneld); err != nil {
		t.Fatal(err)
	}
	after, err := h.FlannelSubnet()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("flanneld took subnet %s after restart, had %s", after, before)
	}
	own := netip.MustParsePrefix(after).Masked()
	addrs, err := h.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", lab.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(addrs) {
		if p, err := netip.ParsePrefix(f); err == nil && !own.Contains(p.Addr()) {
			t.Errorf("%s has address %s outside its flannel subnet %s:\n%s", lab.VXLANDevice, p, own, addrs)
		}
	}
	// The host's own custom network must stay on its bridge, not the tunnel.
	if r, _ := routeTo(h, base[1].Subnet); strings.Contains(r, lab.VXLANDevice) {
		t.Errorf("local network %s routed into the tunnel after flanneld restart: %s", base[1].Subnet, r)
	}
	eventually(t, 30*time.Second, "all pairs after flanneld restart", func() error { return allPairs(ctx, baseNets()) })
}

// flannel-registrar killed with SIGKILL and started again: no route to any
// network disappears on any host in between, its etcd records are kept (not
// deleted and re-created), and it converges again (a new network works).
func TestRegistrarKilled(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	h := l.Host(1)
	revs := createRevisions(t, l, registrarPrefix+"h1/")
	if len(revs) == 0 {
		t.Fatalf("no records of h1 under %sh1/", registrarPrefix)
	}
	mon := watchRoutes(t, l, baseNets())
	if err := h.Kill(ctx, lab.Registrar); err != nil {
		t.Fatal(err)
	}
	// Longer than INTERVAL: peers resync at least once while it is dead.
	wait(t, time.Duration(l.Interval+5)*time.Second)
	if err := h.Start(ctx, lab.Registrar); err != nil {
		t.Fatal(err)
	}
	wait(t, 10*time.Second)
	misses, polls := mon.stop()
	t.Logf("%d route checks while the registrar was down and restarting", polls)
	if len(misses) > 0 {
		t.Errorf("%d route checks failed, first: %s", len(misses), strings.Join(misses[:min(5, len(misses))], "\n"))
	}
	for k, rev := range createRevisions(t, l, registrarPrefix+"h1/") {
		if old, ok := revs[k]; ok && old != rev {
			t.Errorf("%s was re-created (create revision %d -> %d)", k, old, rev)
		}
	}
	n, err := newNet(ctx, h, "afterkill", "198.19.51.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, n)
	eventually(t, 30*time.Second, "new network after restart", func() error {
		return allPairs(ctx, []*testNet{n, base[2], base[3]})
	})
}

// etcd stopped for 20 s and started again: traffic keeps flowing during the
// outage, and a network created during the outage becomes reachable after.
func TestEtcdOutage(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	const outage = 20 * time.Second
	var pingers []*pinger
	for _, pair := range [][2]int{{1, 2}, {2, 3}, {3, 1}} {
		p, err := startPinger(base[pair[0]], base[pair[1]].IP, outage+5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		pingers = append(pingers, p)
	}
	mon := watchRoutes(t, l, baseNets())
	if err := l.StopEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	n, err := newNet(ctx, l.Host(3), "outage", "198.19.52.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, n)
	wait(t, outage-time.Since(stopped))
	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	for i, p := range pingers {
		sent, got, err := p.wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pinger %d: %d sent, %d received across the outage", i, sent, got)
		if sent < 50 || sent-got > 1 {
			t.Errorf("pinger %d lost traffic during the etcd outage: %d sent, %d received", i, sent, got)
		}
	}
	if misses, _ := mon.stop(); len(misses) > 0 {
		t.Errorf("routes changed during the etcd outage: %s", strings.Join(misses[:min(5, len(misses))], "\n"))
	}
	eventually(t, 60*time.Second, "network created during the outage", func() error {
		return allPairs(ctx, []*testNet{n, base[1], base[2]})
	})
	t.Logf("network created during the outage reachable %s after etcd returned", time.Since(started).Round(time.Millisecond))
}

// dockerd restarted on a host: its registrations survive in etcd and on the
// other hosts while it is down, and connectivity returns after.
func TestDockerdRestart(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	h := l.Host(2)
	revs := createRevisions(t, l, registrarPrefix+"h2/")
	if err := h.Stop(ctx, lab.Dockerd); err != nil {
		t.Fatal(err)
	}
	// Past the registrar's noticing Docker is gone and one resync.
	wait(t, time.Duration(l.Interval+2)*time.Second)
	for k := range revs {
		if err := presentInEtcd(l, k); err != nil {
			t.Errorf("while dockerd is down: %v", err)
		}
	}
	if err := routedEverywhere(l, base[2]); err != nil {
		t.Errorf("while dockerd is down: %v", err)
	}
	if err := h.Start(ctx, lab.Dockerd); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	eventually(t, 60*time.Second, "all pairs after dockerd restart", func() error { return allPairs(ctx, baseNets()) })
	t.Logf("connectivity back %s after dockerd answered", time.Since(restarted).Round(time.Millisecond))
	for k, rev := range createRevisions(t, l, registrarPrefix+"h2/") {
		if old, ok := revs[k]; ok && old != rev {
			t.Errorf("%s was re-created (create revision %d -> %d)", k, old, rev)
		}
	}
}

// Two hosts create networks with the same subnet: the second is refused
// with a clear message, the first keeps working (routes and traffic).
func TestDuplicateSubnet(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	const subnet = "198.19.53.0/24"
	first, err := newNet(ctx, l.Host(1), "dupfirst", subnet)
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, first)
	eventually(t, 30*time.Second, "first network reachable", func() error { return reach(ctx, base[2], first) })

	h3 := l.Host(3)
	offset := logSize(h3)
	second, err := newNet(ctx, h3, "dupsecond", subnet)
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, second)
	eventually(t, 30*time.Second, "refusal logged by h3's registrar", func() error {
		for _, line := range splitLines(registrarLogSince(h3, offset)) {
			if refusal(line, "dupsecond", subnet) {
				t.Logf("h3 registrar: %s", line)
				return nil
			}
		}
		return fmt.Errorf("no warning or error naming network dupsecond, %s and a conflict or claim in %s", subnet, h3.Log(lab.Registrar))
	})
	if err := reservationOwner(l, "198.19.53.0-24", "h1"); err != nil {
		t.Error(err)
	}
	if err := absentInEtcd(l, registrarPrefix+"h3/dupsecond"); err != nil {
		t.Error(err)
	}
	// h3 keeps its local network on its bridge; h2 keeps routing to h1.
	if r, _ := routeTo(h3, subnet); strings.Contains(r, lab.VXLANDevice) {
		t.Errorf("h3 routes its local %s into the tunnel: %s", subnet, r)
	}
	wait(t, 2*time.Second)
	if err := reach(ctx, base[2], first); err != nil {
		t.Errorf("first network after the conflicting one: %v", err)
	}
}

// refusal reports whether a registrar log line (JSON) is a warning or error
// that names the network and subnet and says why: a conflict, or the subnet
// already claimed.
func refusal(line, network, subnet string) bool {
	var rec struct{ Level string }
	if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
		return false
	}
	low := strings.ToLower(line)
	return strings.Contains(line, network) && strings.Contains(line, subnet) &&
		(strings.Contains(low, "conflict") || strings.Contains(low, "claimed"))
}

func wait(t *testing.T, d time.Duration) {
	t.Helper()
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// routeTo returns `ip route show <cidr>` on h ("" when there is none).
func routeTo(h *lab.Host, cidr string) (string, error) {
	return h.Run(context.Background(), "ip", "route", "show", "exact", cidr)
}

func withEtcd(l *lab.Lab, f func(ctx context.Context, cli *clientv3.Client) error) error {
	cli, err := l.EtcdClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f(ctx, cli)
}

func createRevisions(t *testing.T, l *lab.Lab, prefix string) map[string]int64 {
	t.Helper()
	revs := map[string]int64{}
	err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			revs[string(kv.Key)] = kv.CreateRevision
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", prefix, err)
	}
	return revs
}

func absentInEtcd(l *lab.Lab, keys ...string) error {
	return withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		for _, k := range keys {
			resp, err := cli.Get(ctx, k)
			if err != nil {
				return err
			}
			if len(resp.Kvs) > 0 {
				return fmt.Errorf("%s still in etcd: %s", k, resp.Kvs[0].Value)
			}
		}
		return nil
	})
}

func presentInEtcd(l *lab.Lab, key string) error {
	return withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%s missing from etcd", key)
		}
		return nil
	})
}

// reservationOwner checks that flannel's registry reserves subnetKey for host.
func reservationOwner(l *lab.Lab, subnetKey, host string) error {
	return withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, flannelSubnets+subnetKey)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("no reservation %s%s", flannelSubnets, subnetKey)
		}
		var lease struct {
			BackendData struct{ Host string }
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, &lease); err != nil {
			return fmt.Errorf("reservation %s: %w", subnetKey, err)
		}
		if lease.BackendData.Host != host {
			return fmt.Errorf("reservation %s belongs to %q, want %q: %s", subnetKey, lease.BackendData.Host, host, resp.Kvs[0].Value)
		}
		return nil
	})
}
