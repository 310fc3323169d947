package registry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
)

// The etcd role README.md ("Running against an etcd cluster") tells
// operators to create, granted exactly as its etcdctl commands do: read on
// flannel's config key, readwrite on flannel's subnets and on our prefix.
func grantRegistrarRole(t *testing.T, ctx context.Context, admin *clientv3.Client, role string) {
	t.Helper()
	if _, err := admin.RoleAdd(ctx, role); err != nil {
		t.Fatal(err)
	}
	grants := []struct {
		key    string
		prefix bool
		perm   clientv3.PermissionType
	}{
		{keys.FlannelConfig(), false, clientv3.PermissionType(clientv3.PermRead)},
		{keys.Subnets(), true, clientv3.PermissionType(clientv3.PermReadWrite)},
		{keys.Records(), true, clientv3.PermissionType(clientv3.PermReadWrite)},
	}
	for _, g := range grants {
		end := ""
		if g.prefix {
			end = clientv3.GetPrefixRangeEnd(g.key)
		}
		if _, err := admin.RoleGrantPermission(ctx, role, g.key, end, g.perm); err != nil {
			t.Fatalf("grant %s on %s: %v", role, g.key, err)
		}
	}
}

func addUser(t *testing.T, ctx context.Context, admin *clientv3.Client, user, role string) {
	t.Helper()
	if _, err := admin.UserAdd(ctx, user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, user, role); err != nil {
		t.Fatal(err)
	}
}

func userClient(t *testing.T, srv *etcdtest.Server, user string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		Username: user, Password: user + "-pw",
	})
	if err != nil {
		t.Fatalf("client as %s: %v", user, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// With auth enabled, a user holding only that role registers, keeps alive,
// reads and unregisters; a user that may only read our prefix gets
// "permission denied" naming the operation.
func TestRegistrarRoleOnAuthEnabledEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	admin := srv.Client(t)
	ctx := ctxT(t)
	if _, err := admin.Put(ctx, keys.FlannelConfig(), `{"Network":"198.18.0.0/16"}`); err != nil {
		t.Fatal(err)
	}
	grantRegistrarRole(t, ctx, admin, "flannel-registrar")
	addUser(t, ctx, admin, "h1", "flannel-registrar")
	if _, err := admin.RoleAdd(ctx, "reader"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{keys.Subnets(), keys.Records()} {
		if _, err := admin.RoleGrantPermission(ctx, "reader", p, clientv3.GetPrefixRangeEnd(p), clientv3.PermissionType(clientv3.PermRead)); err != nil {
			t.Fatal(err)
		}
	}
	addUser(t, ctx, admin, "h2", "reader")
	if _, err := admin.UserAdd(ctx, "root", "root-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}

	cli := userClient(t, srv, "h1")
	r, _ := newRegistry(t, cli, "h1")
	runRegistry(t, r)
	n := network("h1", "app1", "198.19.1.0/24")
	if res, err := r.PutNetwork(ctx, n); err != nil || res.Change != registry.Created {
		t.Fatalf("register as the registrar role: %+v, %v", res, err)
	}
	if _, err := r.PutHost(ctx, registry.HostRecord{Host: "h1", PublicIP: "198.51.100.1", VtepMAC: "c6:a7:e4:a5:a1:dd", VNI: 1}); err != nil {
		t.Fatalf("host record as the registrar role: %v", err)
	}
	// What the etcd watcher and /readyz read: both prefixes, the config.
	for _, p := range []string{keys.Subnets(), keys.Records()} {
		resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("list %s as the registrar role: %d keys, %v", p, len(resp.Kvs), err)
		}
	}
	if _, err := cli.Get(ctx, keys.FlannelConfig()); err != nil {
		t.Fatalf("read flannel's config as the registrar role: %v", err)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, keys.Records(), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; wr.Err() != nil {
		t.Fatalf("watch %s as the registrar role: %v", keys.Records(), wr.Err())
	}
	if _, err := cli.Put(ctx, keys.FlannelConfig(), "{}"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the role may write flannel's config (%v): it grants more than needed", err)
	}
	if res, err := r.DeleteNetwork(ctx, "app1", ident); err != nil || !res.Deleted() {
		t.Fatalf("unregister as the registrar role: %+v, %v", res, err)
	}

	reader, _ := newRegistry(t, userClient(t, srv, "h2"), "h2")
	_, err := reader.PutNetwork(ctx, network("h2", "app2", "198.19.2.0/24"))
	if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "readwrite on the prefixes "+keys.Records()) {
		t.Errorf("register without write on %s: %v, want permission denied naming the prefixes", keys.Records(), err)
	}
}
