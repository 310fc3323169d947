package etcd_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// The watcher asks for progress notifications on its watch stream: a write
// outside both watched prefixes, which no watch event reports, still moves
// the watcher's revision, and the stream is never judged silent while etcd
// answers.
func TestProgressRequestsKeepTheStreamAnswering(t *testing.T) {
	h := newHarness(t, func(o *etcdwatch.Options) { o.HeaderCheckInterval = 100 * time.Millisecond })
	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.store.Synced("etcd") {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	rev := h.put(t, "/elsewhere/key", "v")
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := h.w.Stats().Revision; got < rev {
			return fmt.Errorf("watcher at revision %d, want at least %d (the write outside the prefixes)", got, rev)
		}
		return nil
	})
	// Several silence windows (3 s at this interval) pass with etcd
	// answering: no re-list.
	deadline := time.NewTimer(4 * time.Second)
	defer deadline.Stop()
	<-deadline.C
	if n := h.rec.count(&h.rec.relists); n != 0 {
		t.Errorf("re-listed %d times with etcd answering: %v", n, h.rec.snapshot(&h.rec.relists))
	}
}

// LastAnswered follows etcd: zero before the first read, advancing with the
// answers to progress requests while etcd answers, still while etcd is
// down, advancing again once it is back (the header read while the resumed
// stream is silent, then its answers).
func TestLastAnsweredFollowsEtcd(t *testing.T) {
	h := newHarness(t, func(o *etcdwatch.Options) { o.HeaderCheckInterval = 100 * time.Millisecond })
	if !h.w.LastAnswered().IsZero() {
		t.Fatal("answered before running")
	}
	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.store.Synced("etcd") || h.w.LastAnswered().IsZero() {
			return fmt.Errorf("not synced, or no answer recorded")
		}
		return nil
	})
	first := h.w.LastAnswered()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.w.LastAnswered().After(first) {
			return fmt.Errorf("last answer still %s: the progress answers do not count", first)
		}
		return nil
	})
	h.srv.Stop()
	testutil.Eventually(t, 20*time.Second, func() error {
		if age := time.Since(h.w.LastAnswered()); age < 2*time.Second {
			return fmt.Errorf("last answer %s ago with etcd stopped", age)
		}
		return nil
	})
	restarted := time.Now()
	h.srv.Restart(t)
	testutil.Eventually(t, 30*time.Second, func() error {
		if !h.w.LastAnswered().After(restarted) {
			return fmt.Errorf("no answer since etcd restarted")
		}
		return nil
	})
}
