package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// Flannel's Network comes from the etcd watcher: in the store once etcd is
// listed, following a change, kept when the key is deleted or garbage.
func TestFlannelNetworkFollowsTheWatch(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	a := &App{log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: state.New(),
		cfg: config.Config{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}}
	key := a.keys().FlannelConfig()
	put := func(v string) {
		t.Helper()
		if _, err := cli.Put(context.Background(), key, v); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	w, err := etcdwatch.New(etcdwatch.Options{Client: cli, Keys: a.keys(), Store: a.store, OnFlannelConfig: a.onFlannelConfig})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watcher Run: %v", err)
		}
	})
	want := func(p string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			if got := a.store.FlannelNetwork(); got != netip.MustParsePrefix(p) {
				return fmt.Errorf("flannel network %s, want %s", got, p)
			}
			return nil
		})
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !a.store.Synced("etcd") {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if got := a.store.FlannelNetwork(); got != netip.MustParsePrefix("10.5.0.0/16") {
		t.Fatalf("flannel network %s once etcd is listed, want 10.5.0.0/16", got)
	}
	put(`{"Network":"10.6.0.0/16"}`)
	want("10.6.0.0/16")
	put(`{garbage`)
	if _, err := cli.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	// A lease written after both is in the store: the watcher applied them
	// (one stream, in order).
	lease := `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:dd"}}`
	if _, err := cli.Put(context.Background(), a.keys().Subnet(netip.MustParsePrefix("10.6.1.0/24")), lease); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := a.store.Lease(netip.MustParsePrefix("10.6.1.0/24")); !ok {
			return fmt.Errorf("lease not in the store yet")
		}
		return nil
	})
	if got := a.store.FlannelNetwork(); got != netip.MustParsePrefix("10.6.0.0/16") {
		t.Errorf("flannel network %s after a garbage value and a delete, want 10.6.0.0/16 kept", got)
	}
	put(`{"Network":"10.7.1.0/24"}`)
	want("10.7.1.0/24")
}
