package app

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// "etcd answers now" (/readyz, the recovery guard) comes from the etcd
// watcher's own reads, with no read of its own: it holds while a real etcd
// answers, fails while it is stopped, and holds again once it is back.
func TestReadyFollowsTheWatchersEtcdAnswers(t *testing.T) {
	srv := etcdtest.Start(t)
	a := testApp()
	a.cfg.FlannelPrefix, a.cfg.ConfigPrefix = "/coreos.com/network", "/flannel/network/subnets"
	w, err := etcdwatch.New(etcdwatch.Options{Client: srv.Client(t), Keys: a.keys(), Store: a.store})
	if err != nil {
		t.Fatal(err)
	}
	a.etcdW = w
	etcdDown := func() bool {
		return slices.ContainsFunc(a.notReady(), func(s string) bool { return strings.HasPrefix(s, "etcd unreachable") })
	}
	if !etcdDown() {
		t.Fatal("etcd counted as answering before the watcher read anything")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wait := func(what string, want bool) {
		t.Helper()
		if err := poll.Until(ctx, 30*time.Second, 20*time.Millisecond, func() error {
			if etcdDown() != want {
				return errors.New(what + ": " + strings.Join(a.notReady(), "; "))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	wait("etcd up, /readyz still says it is unreachable", false)
	srv.Stop()
	wait("etcd stopped, /readyz does not say it is unreachable", true)
	srv.Restart(t)
	wait("etcd back, /readyz still says it is unreachable", false)
}
