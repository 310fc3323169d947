package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
)

// haltingLessor fails its first KeepAlive calls as a halted keep-alive loop
// does, then delegates to a real lessor.
type haltingLessor struct {
	clientv3.Lease
	fails *atomic.Int32
}

func (l haltingLessor) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, clientv3.ErrKeepAliveHalted{Reason: errors.New("injected")}
	}
	return l.Lease.KeepAlive(ctx, id)
}

// TestKeepAliveRetriedAfterHalt: a keep-alive that cannot be started is
// retried (on a new lessor) instead of ending Run; the records outlive
// several TTLs.
func TestKeepAliveRetriedAfterHalt(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	r, err := registry.New(registry.Config{
		Client: srv.Client(t), Keys: keys, Host: "h1",
		RegistrationTTL: 2 * time.Second, HostLivenessTTL: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	fails := &atomic.Int32{}
	fails.Store(3)
	var lessors atomic.Int32
	registry.SetLessor(r, func(c *clientv3.Client) clientv3.Lease {
		lessors.Add(1)
		return haltingLessor{Lease: clientv3.NewLease(c), fails: fails}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	returned := false
	defer func() {
		cancel()
		if returned {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel; want nil", err)
		}
	}()
	if _, err := r.PutNetwork(ctxT(t), network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(6 * time.Second) // three TTLs
	defer timer.Stop()
	select {
	case err := <-done:
		returned = true
		t.Fatalf("Run returned %v while the keep-alive failed", err)
	case <-timer.C:
	}
	if get(t, cli, keys.Network("h1", "app1")) == nil {
		t.Fatal("record expired: the keep-alive was not restarted")
	}
	if fails.Load() >= 0 || lessors.Load() < 2 {
		t.Errorf("fails left %d, lessors %d: want all injected failures consumed and a new lessor", fails.Load(), lessors.Load())
	}
}

var (
	macB   = net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02}
	identB = registry.Identity{PublicIP: netip.MustParseAddr("198.51.100.2"), VtepMAC: macB}
)

// asB is n as published by a second registrar with identB.
func asB(n registry.Network) registry.Network {
	n.PublicIP, n.VtepMAC = identB.PublicIP, identB.VtepMAC
	return n
}

// TestDuplicateHostName: two registrars configured with the same host name
// and different identities never delete or overwrite each other's entries,
// and both see the duplicate.
func TestDuplicateHostName(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	a, _ := newRegistry(t, srv.Client(t), "h1")
	b, _ := newRegistry(t, srv.Client(t), "h1")
	if _, err := a.PutNetwork(ctx, network("h1", "app1", "198.19.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutNetwork(ctx, asB(network("h1", "app2", "198.19.2.0/24"))); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutHost(ctx, registry.HostRecord{PublicIP: "198.51.100.1", VtepMAC: ident.VtepMAC.String()}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, cli)

	_, err := b.PutHost(ctx, registry.HostRecord{PublicIP: "198.51.100.2", VtepMAC: macB.String()})
	var de *registry.DuplicateHostError
	if !errors.As(err, &de) || de.PublicIP != "198.51.100.1" || de.Key != keys.Host("h1") {
		t.Errorf("B's PutHost = %v; want a DuplicateHostError naming A", err)
	}
	// B's copy of a cloned network: A's record is not overwritten.
	_, err = b.PutNetwork(ctx, asB(network("h1", "app1", "198.19.1.0/24")))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || ce.Duplicate.PublicIP != "198.51.100.1" || ce.Withdrawn ||
		!strings.Contains(ce.Claimant, "another registrar uses host name h1 with PublicIP 198.51.100.1") {
		t.Errorf("B's put of app1 = %v; want a duplicate conflict naming A", err)
	}
	// Unregistering what the other one holds deletes nothing.
	for _, tc := range []struct {
		r       *registry.Registry
		id      registry.Identity
		network string
		hint    string
		other   string
	}{
		{a, ident, "app2", "198.19.2.0/24", "198.51.100.2"},
		{b, identB, "app1", "198.19.1.0/24", "198.51.100.1"},
	} {
		res, err := tc.r.DeleteNetwork(ctx, tc.network, tc.id, netip.MustParsePrefix(tc.hint))
		if err != nil || res.Deleted() || res.Duplicate.PublicIP != tc.other {
			t.Errorf("delete %s = %+v, %v; want nothing deleted and duplicate %s", tc.network, res, err, tc.other)
		}
		names, dups, err := tc.r.OwnNetworks(ctx, tc.id)
		if err != nil || slices.Contains(names, tc.network) || len(dups) != 1 || dups[0].PublicIP != tc.other {
			t.Errorf("own networks = %v, %+v, %v; want without %s and duplicate %s", names, dups, err, tc.network, tc.other)
		}
	}
	if after := dump(t, cli); after != before {
		t.Errorf("etcd changed:\nbefore %s\nafter  %s", before, after)
	}

	// A restart of A with a recreated VXLAN device (same PublicIP, new MAC)
	// is A itself: its records are re-attached and updated, not refused.
	a2, _ := newRegistry(t, srv.Client(t), "h1")
	n := network("h1", "app1", "198.19.1.0/24")
	n.VtepMAC = net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x03}
	if res, err := a2.PutNetwork(ctx, n); err != nil || res.Change != registry.Updated {
		t.Errorf("restarted A's put = %+v, %v; want updated", res, err)
	}
}

// TestOverlappingClaims: a subnet that overlaps another host's reservation
// or a flannel lease is a conflict naming the overlapping key, both ways;
// entries of this host itself and flannel's configured Network do not count.
func TestOverlappingClaims(t *testing.T) {
	wide, narrow := "198.19.0.0/16", "198.19.5.0/24"
	for _, order := range [][2]string{{wide, narrow}, {narrow, wide}} {
		t.Run(strings.ReplaceAll(order[0], "/", "_")+"_first", func(t *testing.T) {
			srv := etcdtest.Start(t)
			cli := srv.Client(t)
			ctx := ctxT(t)
			a, _ := newRegistry(t, srv.Client(t), "h1")
			b, _ := newRegistry(t, srv.Client(t), "h2")
			if _, err := a.PutNetwork(ctx, network("h1", "app1", order[0])); err != nil {
				t.Fatal(err)
			}
			before := dump(t, cli)
			nb := network("h2", "web", order[1])
			nb.PublicIP = netip.MustParseAddr("198.51.100.2")
			_, err := b.PutNetwork(ctx, nb)
			var ce *registry.ConflictError
			wantKey := keys.Subnet(netip.MustParsePrefix(order[0]))
			if !errors.As(err, &ce) || ce.Key != wantKey || !strings.Contains(ce.Claimant, "host h1 network app1") {
				t.Fatalf("overlapping put = %v; want a conflict naming %s", err, wantKey)
			}
			if after := dump(t, cli); after != before {
				t.Errorf("etcd changed by a refused claim:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	r, _ := newRegistry(t, cli, "h1")
	// flannel's config Network contains every subnet: normal.
	mustPut(t, cli, keys.FlannelConfig(), `{"Network":"198.18.0.0/15","Backend":{"Type":"vxlan"}}`)
	// This host's own flanneld lease and another network of ours overlap: fine.
	own, _ := flannel.Encode(flannel.NewVXLAN(ident.PublicIP, 1, ident.VtepMAC))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.18.0.0/16")), string(own))
	ours, _ := flannel.Encode(flannel.NewReservation("h1", "big"))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.18.1.0/24")), string(ours))
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "198.18.1.0/25")); err != nil {
		t.Fatalf("put overlapping only our own entries = %v", err)
	}
	// Another flanneld's lease overlapping is a conflict.
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:09")
	theirs, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.9"), 1, mac))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.7.0/24")), string(theirs))
	_, err := r.PutNetwork(ctx, network("h1", "app2", "198.19.7.128/25"))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || ce.Key != keys.Subnet(netip.MustParsePrefix("198.19.7.0/24")) ||
		!strings.Contains(ce.Claimant, "a flannel vxlan lease of PublicIP 198.51.100.9") {
		t.Errorf("put overlapping a flannel lease = %v; want a conflict", err)
	}
}

// TestDualStackLeaseConflicts: another host's flanneld in dual-stack mode
// writes its lease at "10.5.35.0-24&fd00::-64". A reservation of its IPv4
// subnet, or of a subnet inside or around it, is a conflict naming that key,
// and nothing is written; so is this host's own dual-stack flannel lease at
// exactly the network's subnet, as at a plain key.
func TestDualStackLeaseConflicts(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	r, _ := newRegistry(t, cli, "h1")
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:09")
	theirs, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.9"), 1, mac))
	dualKey := keys.Subnets() + flannel.DualStackKey(netip.MustParsePrefix("10.5.35.0/24"), netip.MustParsePrefix("fd00::/64"))
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, dualKey, string(theirs), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	before := dump(t, cli)
	for _, cidr := range []string{"10.5.35.0/24", "10.5.35.128/25", "10.5.0.0/16"} {
		_, err := r.PutNetwork(ctx, network("h1", "app1", cidr))
		var ce *registry.ConflictError
		if !errors.As(err, &ce) || ce.Key != dualKey || !strings.Contains(ce.Claimant, "a flannel vxlan lease of PublicIP 198.51.100.9") {
			t.Errorf("put %s = %v; want a conflict with %s", cidr, err, dualKey)
		}
	}
	if after := dump(t, cli); after != before {
		t.Errorf("etcd changed by refused claims:\nbefore %s\nafter  %s", before, after)
	}
	// A subnet next to it is free.
	if _, err := r.PutNetwork(ctx, network("h1", "app1", "10.5.36.0/24")); err != nil {
		t.Errorf("put 10.5.36.0/24 beside the dual-stack lease = %v", err)
	}
	// This host's own flanneld lease at the network's subnet, dual-stack.
	own, _ := flannel.Encode(flannel.NewVXLAN(ident.PublicIP, 1, ident.VtepMAC))
	ownKey := keys.Subnets() + "10.5.37.0-24&fd00:37::-64"
	if _, err := cli.Put(ctx, ownKey, string(own), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	_, err = r.PutNetwork(ctx, network("h1", "app2", "10.5.37.0/24"))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || ce.Key != ownKey {
		t.Errorf("put over this host's own dual-stack flannel lease = %v; want a conflict with %s", err, ownKey)
	}
}

// TestSubnetChangeIntoConflictWithdraws: when a network's subnet changes to
// one that conflicts, its old record and reservation are withdrawn so that
// peers stop routing the old subnet to us.
func TestSubnetChangeIntoConflictWithdraws(t *testing.T) {
	for _, tc := range []struct{ name, held, wanted string }{
		{"exact", "198.19.2.0/24", "198.19.2.0/24"},
		{"overlap", "198.19.2.0/24", "198.19.2.128/25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := etcdtest.Start(t)
			cli := srv.Client(t)
			ctx := ctxT(t)
			r, _ := newRegistry(t, cli, "h1")
			old := netip.MustParsePrefix("198.19.1.0/24")
			if _, err := r.PutNetwork(ctx, network("h1", "app1", old.String())); err != nil {
				t.Fatal(err)
			}
			foreign, _ := flannel.Encode(flannel.NewReservation("h2", "web"))
			heldKey := keys.Subnet(netip.MustParsePrefix(tc.held))
			mustPut(t, cli, heldKey, string(foreign))
			_, err := r.PutNetwork(ctx, network("h1", "app1", tc.wanted))
			var ce *registry.ConflictError
			if !errors.As(err, &ce) || !ce.Withdrawn || ce.WithdrawnSubnet != old || ce.Key != heldKey {
				t.Fatalf("put = %v (%+v); want a conflict on %s that withdrew %s", err, ce, heldKey, old)
			}
			if get(t, cli, keys.Network("h1", "app1")) != nil || get(t, cli, keys.Subnet(old)) != nil {
				t.Error("old record or reservation still published")
			}
			if kv := get(t, cli, heldKey); kv == nil || string(kv.Value) != string(foreign) {
				t.Errorf("the claimant's reservation was touched: %v", kv)
			}
		})
	}
}

// TestLegacyLeaseQuarantined: what the original tool wrote for a local
// network's subnet (a TTL-less vxlan lease in flannel's format with this
// host's PublicIP and VtepMAC, while this host's flanneld holds its own
// lease elsewhere) is copied under _quarantine and replaced by our
// reservation; so are its unambiguous variants (VtepMAC "unknown", the
// pre-1.2 format naming this host). flanneld's own leases (with a TTL),
// other hosts' leases and values the original never wrote are conflicts,
// untouched.
func TestLegacyLeaseQuarantined(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	r, _ := newRegistry(t, cli, "h1")
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := flannel.Encode(flannel.NewVXLAN(ident.PublicIP, 1, ident.VtepMAC))
	// This host's flanneld holds 10.5.7.0/24 (with its TTL).
	if _, err := cli.Put(ctx, keys.Subnet(netip.MustParsePrefix("10.5.7.0/24")), string(legacy), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	quarantined := []struct{ subnet, value string }{
		{"198.19.1.0/24", string(legacy)},
		{"198.19.4.0/24", `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"unknown"}}`},
		{"198.19.5.0/24", `{"PublicIP":"198.51.100.1","backend":{"type":"vxlan","vtepMAC":"c6:a7:e4:a5:a1:dd"},"hostname":"h1"}`},
	}
	for i, q := range quarantined {
		p := netip.MustParsePrefix(q.subnet)
		key := keys.Subnet(p)
		mustPut(t, cli, key, q.value)
		res, err := r.PutNetwork(ctx, network("h1", fmt.Sprintf("q%d", i), p.String()))
		qKey := "/flannel/network/subnets/_quarantine/coreos.com/network/subnets/" + flannel.SubnetKey(p)
		if err != nil || len(res.Quarantined) != 1 || res.Quarantined[0].To != qKey || res.Quarantined[0].Key != key {
			t.Fatalf("put over %s = %+v, %v; want it quarantined to %s", q.value, res, err, qKey)
		}
		if kv := get(t, cli, qKey); kv == nil || string(kv.Value) != q.value || kv.Lease != 0 {
			t.Errorf("quarantined copy = %v; want %s without lease", kv, q.value)
		}
		kv := get(t, cli, key)
		if l, err := flannel.Decode(kv.Value); err != nil || l.BackendType != flannel.BackendReservation || clientv3.LeaseID(kv.Lease) != r.Lease() {
			t.Errorf("subnet key = %s (lease %x); want our reservation on lease %x", kv.Value, kv.Lease, r.Lease())
		}
	}

	// Not the original's: a lease with a TTL (flanneld's own), another
	// PublicIP, another VNI (flanneld's config), IPv6 data, another MAC, a
	// hand-written value, the old format naming another host.
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:09")
	other, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.9"), 1, mac))
	vni2, _ := flannel.Encode(flannel.NewVXLAN(ident.PublicIP, 2, ident.VtepMAC))
	conflicts := map[string]string{
		"198.19.3.0/24":  string(other),
		"198.19.6.0/24":  string(vni2),
		"198.19.7.0/24":  `{"PublicIP":"198.51.100.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:dd"}}`,
		"198.19.8.0/24":  `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:de"}}`,
		"198.19.9.0/24":  `{"PublicIP":"198.51.100.1","BackendType":"vxlan"}`,
		"198.19.10.0/24": `{"PublicIP":"198.51.100.1","backend":{"type":"vxlan","vtepMAC":"c6:a7:e4:a5:a1:dd"},"hostname":"h2"}`,
	}
	p2 := netip.MustParsePrefix("198.19.2.0/24")
	if _, err := cli.Put(ctx, keys.Subnet(p2), string(legacy), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	subnets := []string{p2.String()}
	for sub, v := range conflicts {
		mustPut(t, cli, keys.Subnet(netip.MustParsePrefix(sub)), v)
		subnets = append(subnets, sub)
	}
	before := dump(t, cli)
	for i, sub := range subnets {
		_, err := r.PutNetwork(ctx, network("h1", fmt.Sprintf("c%d", i), sub))
		var ce *registry.ConflictError
		if !errors.As(err, &ce) {
			t.Errorf("put over %s (%s) = %v; want a conflict", sub, conflicts[sub], err)
		}
	}
	if after := dump(t, cli); after != before {
		t.Errorf("etcd changed:\nbefore %s\nafter  %s", before, after)
	}
}

// TestFlannelReservationNeverQuarantined: an operator reserves this host's
// flannel subnet as flannel documents (the lease's TTL removed, value
// unchanged), and a local Docker network uses that subnet. The value is
// byte for byte what the original tool wrote, but this host's flanneld holds
// no other lease: it is flanneld's own subnet. It is a conflict, never
// quarantined or replaced; so is the same reservation after flanneld
// adopted it again. (Before the fix it was quarantined and replaced by a
// reservation with PublicIP 0.0.0.0, taking flanneld's subnet away.)
func TestFlannelReservationNeverQuarantined(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	r, _ := newRegistry(t, cli, "h1")
	own, _ := flannel.Encode(flannel.NewVXLAN(ident.PublicIP, 1, ident.VtepMAC))
	p := netip.MustParsePrefix("10.5.7.0/24")
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, keys.Subnet(p), string(own), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	// The documented reservation: put the value again without --lease.
	mustPut(t, cli, keys.Subnet(p), string(own))
	if kv := get(t, cli, keys.Subnet(p)); kv.Lease != 0 {
		t.Fatalf("reservation still on lease %x", kv.Lease)
	}
	// Another host's lease exists too; it is not this host's flanneld.
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:09")
	other, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.9"), 1, mac))
	mustPut(t, cli, keys.Subnet(netip.MustParsePrefix("10.5.9.0/24")), string(other))
	before := dump(t, cli)
	res, err := r.PutNetwork(ctx, network("h1", "flannelnet", p.String()))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || len(res.Quarantined) != 0 || ce.Key != keys.Subnet(p) {
		t.Fatalf("put over this host's flannel reservation = %+v, %v; want a conflict on %s", res, err, keys.Subnet(p))
	}
	if after := dump(t, cli); after != before {
		t.Errorf("etcd changed:\nbefore %s\nafter  %s", before, after)
	}
	if kv := get(t, cli, keys.Records()+registry.QuarantineDir+"/coreos.com/network/subnets/10.5.7.0-24"); kv != nil {
		t.Errorf("flannel's reservation was quarantined: %s", kv.Value)
	}
}

// TestRestartWithNewPublicIP: a registrar restarted with a new PublicIP
// (DHCP change) finds its old entries under the old PublicIP. While the old
// instance's host record is alive they are a duplicate's and left alone;
// once its liveness lease is gone they are ours: re-registered under the new
// PublicIP without a conflict and without a record ever being deleted.
func TestRestartWithNewPublicIP(t *testing.T) {
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
	if _, err := old.PutHost(ctx, registry.HostRecord{PublicIP: ident.PublicIP.String(), VtepMAC: ident.VtepMAC.String()}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, keys.HostNetworks("h1"), clientv3.WithPrefix(), clientv3.WithRev(srv.Revision(t)+1))

	// The old instance is still alive: the new one is a duplicate.
	restarted, _ := newRegistry(t, srv.Client(t), "h1")
	_, err := restarted.PutHost(ctx, registry.HostRecord{PublicIP: identB.PublicIP.String(), VtepMAC: macB.String()})
	var de *registry.DuplicateHostError
	if !errors.As(err, &de) || de.PublicIP != ident.PublicIP.String() {
		t.Fatalf("PutHost while the old instance lives = %v; want a DuplicateHostError", err)
	}
	_, err = restarted.PutNetwork(ctx, asB(nets[0]))
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || ce.Duplicate.PublicIP != ident.PublicIP.String() || ce.Withdrawn {
		t.Fatalf("PutNetwork while the old instance lives = %v; want a duplicate conflict", err)
	}
	if _, dups, err := restarted.OwnNetworks(ctx, identB); err != nil || len(dups) != 1 {
		t.Errorf("own networks = %+v, %v; want the old instance as duplicate", dups, err)
	}

	// The old instance stopped: its liveness lease expires (revoked here).
	hostKV := get(t, cli, keys.Host("h1"))
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(hostKV.Lease)); err != nil {
		t.Fatal(err)
	}
	names, dups, err := restarted.OwnNetworks(ctx, identB)
	if err != nil || len(dups) != 0 || !slices.Equal(names, []string{"app1", "app2"}) {
		t.Errorf("own networks after expiry = %v, %+v, %v; want app1 app2 as ours", names, dups, err)
	}
	if wrote, err := restarted.PutHost(ctx, registry.HostRecord{PublicIP: identB.PublicIP.String(), VtepMAC: macB.String()}); err != nil || !wrote {
		t.Errorf("PutHost after expiry = %v, %v; want written", wrote, err)
	}
	for _, n := range nets {
		res, err := restarted.PutNetwork(ctx, asB(n))
		if err != nil || res.Change != registry.Updated {
			t.Errorf("re-register %s = %+v, %v; want updated", n.Network, res, err)
		}
		kv := get(t, cli, keys.Network("h1", n.Network))
		if kv == nil || !strings.Contains(string(kv.Value), `"PublicIP":"198.51.100.2"`) || clientv3.LeaseID(kv.Lease) != restarted.Lease() {
			t.Errorf("record %s = %v; want PublicIP B on the new lease", n.Network, kv)
		}
	}
	mustPut(t, cli, keys.HostNetworks("h1")+"zz-marker", "x")
	for wr := range wch {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.Errorf("DELETE %s during the restart", ev.Kv.Key)
			}
			if strings.HasSuffix(string(ev.Kv.Key), "zz-marker") {
				wcancel()
			}
		}
	}
}
