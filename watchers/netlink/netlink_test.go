package netlink_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"
)

var local = netip.MustParseAddr("198.51.100.1")

// recorder remembers each Change as an "object key [mac] trigger" line.
type recorder struct {
	mu    sync.Mutex
	items []string
	gate  chan struct{} // when non-nil, change blocks until it is closed
}

func (r *recorder) change(c nlwatch.Change) {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	line := strings.Join(strings.Fields(c.Object.String()+" "+c.Key+" "+c.MAC+" "+c.Trigger), " ")
	r.items = append(r.items, line)
	if os.Getenv("FRDP_LOG") != "" {
		fmt.Println("CHANGE", line)
	}
}

// wait polls until a line with every part has been reported, and forgets
// what came before it.
func (r *recorder) wait(t *testing.T, parts ...string) {
	t.Helper()
	testutil.Eventually(t, 2*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, it := range r.items {
			if all(it, parts) {
				r.items = r.items[i+1:]
				return nil
			}
		}
		return fmt.Errorf("no %q among %q", parts, r.items)
	})
}

// none fails if a line with every part was reported.
func (r *recorder) none(t *testing.T, parts ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range r.items {
		if all(it, parts) {
			t.Errorf("unexpected %q", it)
		}
	}
}

func all(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func start(t *testing.T, w *nlwatch.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("watcher did not stop")
		}
	})
}

func TestNotificationsToKeys(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-nlw")
	h := netlinkxtest.Handle(t, ns)
	ul := netlinkxtest.Underlay(t, ns, local)
	netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	rec := &recorder{}
	var resyncs atomic.Int32
	w := nlwatch.New(h, nlwatch.Options{Iface: "flannel.1", OnChange: rec.change,
		Resync: func() { resyncs.Add(1) }})
	start(t, w)
	rec.wait(t, "link flannel.1 netlink:subscribed")
	testutil.Eventually(t, 2*time.Second, func() error {
		if n := resyncs.Load(); n != 1 {
			return fmt.Errorf("%d resyncs after subscribing, want 1", n)
		}
		return nil
	})
	run := func(args ...string) { ns.Run(t, args[0], args[1:]...) }

	run("ip", "route", "add", "198.18.2.0/24", "via", "198.18.2.0", "dev", "flannel.1", "onlink")
	rec.wait(t, "route 198.18.2.0/24 netlink:route-new")
	run("ip", "route", "del", "198.18.2.0/24")
	rec.wait(t, "route 198.18.2.0/24 netlink:route-del")
	run("ip", "route", "add", "10.30.0.0/16", "via", "198.51.100.253", "proto", "76")
	rec.wait(t, "route 10.30.0.0/16 netlink:route-new")
	run("ip", "route", "add", "10.31.0.0/16", "via", "198.51.100.253", "proto", "static")

	run("bridge", "fdb", "append", "aa:bb:cc:00:00:03", "dev", "flannel.1", "dst", "198.51.100.3", "self", "permanent")
	rec.wait(t, "fdb aa:bb:cc:00:00:03 netlink:fdb-new")
	run("bridge", "fdb", "del", "aa:bb:cc:00:00:03", "dev", "flannel.1", "self")
	rec.wait(t, "fdb aa:bb:cc:00:00:03 netlink:fdb-del")

	run("ip", "neigh", "replace", "198.18.4.0", "lladdr", "aa:bb:cc:00:00:04", "dev", "flannel.1", "nud", "permanent")
	rec.wait(t, "neigh 198.18.4.0 aa:bb:cc:00:00:04 netlink:neigh-new 198.18.4.0")
	run("ip", "neigh", "del", "198.18.4.0", "dev", "flannel.1")
	rec.wait(t, "neigh 198.18.4.0 netlink:neigh-del 198.18.4.0") // a deleted neighbour names no MAC
	run("ip", "neigh", "replace", "198.51.100.9", "lladdr", "aa:bb:cc:00:00:09", "dev", "ul0", "nud", "permanent")

	run("ip", "link", "set", "flannel.1", "address", "02:00:00:00:00:01")
	rec.wait(t, "link flannel.1 netlink:link-new")
	run("ip", "link", "del", "flannel.1")
	rec.wait(t, "link flannel.1 netlink:link-del")
	netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	rec.wait(t, "link flannel.1 netlink:link-new")
	// Routes on the recreated device (new index) are still followed.
	run("ip", "route", "add", "198.18.5.0/24", "via", "198.18.5.0", "dev", "flannel.1", "onlink")
	rec.wait(t, "route 198.18.5.0/24 netlink:route-new")

	rec.none(t, "10.31.0.0/16")
	rec.none(t, "aa:bb:cc:00:00:09")
	rec.none(t, "198.51.100.9")
}

// When the kernel overflows a subscription's buffer (ENOBUFS) the watcher
// re-subscribes and asks for a resync, since notifications were lost.
func TestResubscribesAfterOverflow(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-nlw")
	h := netlinkxtest.Handle(t, ns)
	ul := netlinkxtest.Underlay(t, ns, local)
	vx := netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	rec := &recorder{}
	var resyncs atomic.Int32
	subscribed := make(chan struct{}, 8)
	w := nlwatch.New(h, nlwatch.Options{Iface: "flannel.1", OnChange: rec.change, ReceiveBuffer: 4096,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Resync: func() { resyncs.Add(1); subscribed <- struct{}{} }})
	start(t, w)
	<-subscribed
	// Stall the dispatcher, then flood: its channels fill, then the socket.
	gate := make(chan struct{})
	rec.mu.Lock()
	rec.gate = gate
	rec.mu.Unlock()
	for i := range 3000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)
		r := &vnl.Route{LinkIndex: vx.Index, Dst: netlinkx.IPNet(p), Gw: p.Addr().AsSlice(), Flags: 4 /* onlink */}
		if err := h.RouteReplace(r); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("no re-subscription after an overflow; stats %+v", w.Stats())
	}
	if s := w.Stats(); s.Subscriptions < 2 || resyncs.Load() < 2 {
		t.Errorf("stats %+v, %d resyncs; want a second subscription and resync", s, resyncs.Load())
	}
	rec.wait(t, "link flannel.1 netlink:subscribed")
	// The backlog may overflow the tiny buffer again, and a change made
	// between two subscriptions is (rightly) only covered by the resync:
	// repeat the change until one is reported.
	testutil.Eventually(t, 10*time.Second, func() error {
		_, _ = ns.Try("ip", "route", "del", "198.19.0.0/24")
		ns.Run(t, "ip", "route", "add", "198.19.0.0/24", "via", "198.19.0.0", "dev", "flannel.1", "onlink")
		time.Sleep(100 * time.Millisecond)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, it := range rec.items {
			if strings.Contains(it, "route 198.19.0.0/24 netlink:route-new") {
				return nil
			}
		}
		return fmt.Errorf("route-new 198.19.0.0/24 not reported")
	})
}

// A Resync callback that blocks (as the app's does while it lists etcd, the
// kernel and Docker) must not stop notifications being read and reported:
// it runs beside the dispatcher, and a re-subscription meanwhile queues one
// more call instead of a second concurrent one.
func TestBlockingResyncDoesNotStallNotifications(t *testing.T) {
	ns := testutil.NewNetns(t, "frdp-nlw")
	h := netlinkxtest.Handle(t, ns)
	ul := netlinkxtest.Underlay(t, ns, local)
	netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, nil)
	rec := &recorder{}
	release := make(chan struct{})
	var running, calls, overlap atomic.Int32
	w := nlwatch.New(h, nlwatch.Options{Iface: "flannel.1", OnChange: rec.change,
		Resync: func() {
			if running.Add(1) > 1 {
				overlap.Add(1)
			}
			calls.Add(1)
			<-release
			running.Add(-1)
		}})
	start(t, w)
	t.Cleanup(func() { close(release) }) // before the watcher's stop (cleanups run last first)
	testutil.Eventually(t, 2*time.Second, func() error {
		if calls.Load() != 1 {
			return fmt.Errorf("resync not called")
		}
		return nil
	})
	// The resync is blocked; notifications still arrive, many of them.
	for i := range 50 {
		dst := fmt.Sprintf("198.18.%d.0/24", i)
		ns.Run(t, "ip", "route", "add", dst, "via", strings.TrimSuffix(dst, "/24"), "dev", "flannel.1", "onlink")
	}
	rec.wait(t, "route 198.18.49.0/24 netlink:route-new")
	if overlap.Load() != 0 {
		t.Error("two Resync calls ran at once")
	}
}
