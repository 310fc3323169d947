package routes_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"

	"github.com/flannel-registrar/flannel-registrar/cmd/flannel-registrar/app"
)

const iface = "flannel.1"

var (
	localIP = netip.MustParseAddr("198.51.100.1")
	keys    = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}
)

// keyed is a controller as the app wires it.
type keyed interface {
	reconcile.Controller
	KeysFor(state.Event) []string
}

// host is one registrar's data plane in a throwaway namespace: a real
// flannel.1, the real store, the vxlan, fdb and routes controllers, and (once
// started) the manager and the netlink watcher, wired as the app wires them.
type host struct {
	t     *testing.T
	ns    *testutil.Netns
	h     *netlinkx.Handle
	ul    netlink.Link
	store *state.Store
	vx    *vxlan.Controller
	fdb   *fdb.Controller
	rt    *routes.Controller
	mgr   *reconcile.Manager
	log   *slog.Logger

	mu        sync.Mutex
	conflicts []routes.Conflict // every OnConflict call
}

func newHost(t *testing.T, opts routes.Options) *host {
	ns := testutil.NewNetns(t, "frdp-rt")
	x := &host{t: t, ns: ns, h: netlinkxtest.Handle(t, ns), store: state.New(), log: testLogger()}
	x.ul = netlinkxtest.Underlay(t, ns, localIP)
	netlinkxtest.VXLAN(t, ns, iface, x.ul, localIP, nil)
	opts.Host = "h1"
	opts.OnConflict = func(c routes.Conflict) {
		x.mu.Lock()
		defer x.mu.Unlock()
		x.conflicts = append(x.conflicts, c)
	}
	x.vx = vxlan.New(x.h, x.store, iface)
	// Sweeps of flannel-shaped state wait SweepGrace in the daemon; these
	// tests check what is swept, so none unless a test asks for one.
	if opts.SweepGrace == 0 {
		opts.SweepGrace = -1
	}
	x.fdb = fdb.New(x.h, x.store, fdb.Options{Host: "h1", SweepGrace: opts.SweepGrace, Policy: opts.Policy, Hold: opts.Hold})
	x.rt = routes.New(x.h, x.store, opts)
	x.mgr = reconcile.NewManager(0, x.log)
	ctrls := []keyed{x.vx, x.fdb, x.rt}
	for _, c := range ctrls {
		x.mgr.Add(c, reconcile.Options{BaseBackoff: 10 * time.Millisecond, MaxBackoff: time.Second})
	}
	x.store.Subscribe(func(ev state.Event) {
		for _, c := range ctrls {
			for _, k := range c.KeysFor(ev) {
				x.mgr.Enqueue(c.Name(), k, ev.Trigger)
			}
		}
	})
	return x
}

func testLogger() *slog.Logger {
	if os.Getenv("FRDP_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start runs the manager and the netlink watcher until the test ends.
func (x *host) start() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	w := nlwatch.New(x.h, nlwatch.Options{Iface: iface, OnChange: app.KernelChanges(x.mgr, x.fdb.KeysForIP, x.rt, x.fdb),
		Resync: func() {
			x.rt.DropDump()
			x.fdb.DropDump()
			_ = x.mgr.Resync(ctx, "netlink:subscribed")
		}})
	wg.Go(func() { x.mgr.Run(ctx) })
	wg.Go(func() { _ = w.Run(ctx) })
	x.t.Cleanup(func() { cancel(); wg.Wait() })
}

// once runs every key of every controller, as one-shot mode does.
func (x *host) once() {
	x.t.Helper()
	if err := x.mgr.Once(context.Background()); err != nil {
		x.t.Fatalf("once: %v", err)
	}
}

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, b} }
func peerIP(n byte) netip.Addr    { return netip.AddrFrom4([4]byte{198, 51, 100, n}) }

// putRecord stores a network record of host hN (public IP .N, MAC aa:bb:cc:00:00:N).
func (x *host) putRecord(n byte, network, subnet string) string {
	key := keys.Network(fmt.Sprintf("h%d", n), network)
	x.store.PutNetwork(key, registry.Network{Host: fmt.Sprintf("h%d", n), Network: network,
		Subnet: netip.MustParsePrefix(subnet), PublicIP: peerIP(n), VtepMAC: mac(n), VNI: 1}, "test:put "+key)
	return key
}

// putLease stores flanneld's vxlan lease of host .N.
func (x *host) putLease(n byte, subnet string) {
	p := netip.MustParsePrefix(subnet)
	x.store.PutLease(state.Lease{Subnet: p, Raw: flannel.NewVXLAN(peerIP(n), 1, mac(n)), PublicIP: peerIP(n), VNI: 1, VtepMAC: mac(n)},
		"test:put lease "+subnet)
}

// putSelfLease stores this host's own flanneld lease (PublicIP localIP,
// VtepMAC flannel.1's): what a real deployment has, and the proof that the
// store sees flanneld's registry, which sweeping flannel-shaped state needs.
func (x *host) putSelfLease(subnet string) {
	x.t.Helper()
	l, err := x.ns.Handle.LinkByName(iface)
	if err != nil {
		x.t.Fatal(err)
	}
	m := l.Attrs().HardwareAddr
	x.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: flannel.NewVXLAN(localIP, 1, m), PublicIP: localIP, VNI: 1, VtepMAC: m},
		"test:put self lease "+subnet)
}

func (x *host) run(args ...string) string {
	x.t.Helper()
	return x.ns.Run(x.t, args[0], args[1:]...)
}

// has checks that the output of a command contains every want (and, with
// absent, none of them).
func (x *host) has(cmd []string, absent bool, want ...string) error {
	out, err := x.ns.Try(cmd[0], cmd[1:]...)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd, " "), err, out)
	}
	for _, w := range want {
		if strings.Contains(out, w) == absent {
			verb := "lacks"
			if absent {
				verb = "still has"
			}
			return fmt.Errorf("%s %s %q:\n%s", strings.Join(cmd, " "), verb, w, out)
		}
	}
	return nil
}

var (
	ipRoute   = []string{"ip", "-d", "route", "show", "table", "main"}
	ipNeigh   = []string{"ip", "neigh", "show", "dev", iface}
	bridgeFDB = []string{"bridge", "fdb", "show", "dev", iface}
)

// eventually waits up to d for every check to pass.
func (x *host) eventually(d time.Duration, checks ...func() error) {
	x.t.Helper()
	testutil.Eventually(x.t, d, func() error {
		for _, c := range checks {
			if err := c(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (x *host) present(cmd []string, want ...string) func() error {
	return func() error { return x.has(cmd, false, want...) }
}

func (x *host) gone(cmd []string, want ...string) func() error {
	return func() error { return x.has(cmd, true, want...) }
}

// triple is the exact kernel state for a remote subnet behind VTEP .N.
func triple(n byte, subnet, proto string) (route, neigh, fdbEntry string) {
	p := netip.MustParsePrefix(subnet)
	return fmt.Sprintf("unicast %s via %s dev %s %sscope global onlink", p, p.Addr(), iface, proto),
		fmt.Sprintf("%s lladdr %s PERMANENT", p.Addr(), mac(n)),
		fmt.Sprintf("%s dst %s self permanent", mac(n), peerIP(n))
}
