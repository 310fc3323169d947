package legacy

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
)

var keys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

const loopbackLease = `{"PublicIP":"127.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`

func TestClassify(t *testing.T) {
	cases := []struct {
		key, value string
		kind       Kind
		host       string
	}{
		{"/flannel/network/subnets/node-1/app1", "10.5.35.0/24", NetworkText, "node-1"},
		{"/flannel/network/subnets/node-1/app1", "10.5.35.0/24\n", NetworkText, "node-1"},
		{"/flannel/network/subnets/_host_status/node-2", `{"status":"up"}`, HostStatus, "node-2"},
		{"/flannel/network/subnets/_host_status/node-2/time", "123", HostStatus, "node-2"},
		{"/flannel/network/_exists", "true", Exists, ""},
		{"/coreos.com/network/subnets/10.5.35.0-24", loopbackLease, LoopbackVXLAN, ""},
		// Not leftovers: our own JSON record, flanneld's real lease, garbage.
		{"/flannel/network/subnets/node-1/app1", `{"Subnet":"10.5.35.0/24"}`, "", ""},
		{"/coreos.com/network/subnets/10.5.35.0-24", `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`, "", ""},
		{"/coreos.com/network/subnets/garbage", loopbackLease, "", ""},
		{"/flannel/network/subnets/_hosts/node-1", "10.5.35.0/24", "", ""},
		{"/flannel/network/subnets/node-1", "10.5.35.0/24", "", ""},
	}
	for _, c := range cases {
		lo, ok := Classify(keys, c.key, []byte(c.value))
		if ok != (c.kind != "") || lo.Kind != c.kind || lo.Host != c.host {
			t.Errorf("Classify(%s, %q) = %+v %v, want kind %q host %q", c.key, c.value, lo, ok, c.kind, c.host)
		}
	}
}

func TestMovable(t *testing.T) {
	cases := []struct {
		lo   Leftover
		want bool
	}{
		{Leftover{Kind: LoopbackVXLAN}, true},
		{Leftover{Kind: NetworkText, Host: "me"}, true},
		{Leftover{Kind: NetworkText, Host: "other"}, false},
		{Leftover{Kind: HostStatus, Host: "me"}, true},
		{Leftover{Kind: HostStatus, Host: "other"}, false},
		{Leftover{Kind: Exists}, false},
	}
	for _, c := range cases {
		if got := c.lo.Movable("me"); got != c.want {
			t.Errorf("%+v.Movable(me) = %v, want %v", c.lo, got, c.want)
		}
	}
}

// Scan finds every kind in a real etcd; Quarantine copies and removes, and
// refuses when the key changed since it was read.
func TestScanAndQuarantine(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	put := func(k, v string) {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("/flannel/network/subnets/me/app1", "10.5.35.0/24")
	put("/flannel/network/subnets/_host_status/me", "up")
	put("/flannel/network/_exists", "1")
	put("/coreos.com/network/subnets/10.5.36.0-24", loopbackLease)
	put("/coreos.com/network/subnets/10.5.37.0-24", `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`)
	los, err := Scan(ctx, c, keys)
	if err != nil {
		t.Fatal(err)
	}
	got := Summary(los)
	if len(los) != 4 || got[NetworkText] != 1 || got[HostStatus] != 1 || got[Exists] != 1 || got[LoopbackVXLAN] != 1 {
		t.Fatalf("scan = %+v", los)
	}

	key := "/coreos.com/network/subnets/10.5.36.0-24"
	r, err := c.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rev := r.Kvs[0].ModRevision
	put(key, loopbackLease) // changed since read: must not be moved
	if ok, err := Quarantine(ctx, c, keys, key, rev, loopbackLease); err != nil || ok {
		t.Fatalf("quarantine of a changed key = %v, %v; want false", ok, err)
	}
	r, err = c.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := Quarantine(ctx, c, keys, key, r.Kvs[0].ModRevision, loopbackLease); err != nil || !ok {
		t.Fatalf("quarantine = %v, %v; want true", ok, err)
	}
	if r, err := c.Get(ctx, key); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("lease still there: %v %v", r, err)
	}
	q, err := c.Get(ctx, keys.QuarantineKey(key))
	if err != nil || len(q.Kvs) != 1 || string(q.Kvs[0].Value) != loopbackLease {
		t.Fatalf("quarantined copy = %v, %v", q, err)
	}
	if r, err := c.Get(ctx, "/flannel/network/subnets/_quarantine/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 1 {
		t.Fatalf("quarantine holds %v entries (%v), want 1", r, err)
	}
}
