package app

import (
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// TestHistoryLostHoldsAndReregisters: the etcd watcher reports that etcd
// lost our data. The hook (on the watcher's goroutine) must return at once
// every time, with deletions held and the loss logged once per report; the
// re-registration (a resync of the subnets controller, which may block on
// etcd) runs on the app's own goroutine.
func TestHistoryLostHoldsAndReregisters(t *testing.T) {
	srv := etcdtest.Start(t)
	reg, err := registry.New(registry.Config{Client: srv.Client(t), Keys: registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"},
		Host: "h1", RegistrationTTL: time.Minute, HostLivenessTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	a := &App{store: state.New(), reg: reg,
		leaseLost: make(chan struct{}, 1), reregister: make(chan struct{}, 1), hold: &reconcile.Hold{}}
	c, buf := runBlocking(t, a)

	returned := make(chan struct{})
	go func() {
		for range 3 {
			a.onHistoryLost(etcdwatch.HistoryLoss{Reason: "etcd revision went back (3, below 1234 already applied)", Applied: 1234, Revision: 3})
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("OnHistoryLost blocked on the re-registration it asked for")
	}
	if a.hold.Remaining() <= 0 {
		t.Error("deletions not held after the loss was reported")
	}
	select {
	case <-c.calls:
	case <-time.After(5 * time.Second):
		t.Fatal("the loss did not lead to a resync of the subnets controller")
	}
	if got := strings.Count(buf.String(), "etcd lost our data (revision went back 1234 → 3): re-registering 0 networks"); got != 3 {
		t.Errorf("logged the loss %d times, want 3 (once per report):\n%s", got, buf.String())
	}
}
