// Command dpbench measures the data-plane controllers on a real kernel: the
// time to converge N remote subnets from a cold start (routes, neighbours and
// FDB entries on a real VXLAN device in a throwaway network namespace), and
// the cost of one resync over the converged host (time and netlink writes,
// which must be zero). It prints one table row per size.
//
// Every subnet is behind a VTEP with -per-vtep subnets: one flanneld vxlan
// lease (flannel's values) and the rest network records (our protocol), as
// on a cluster where each host has a flannel subnet and some Docker networks.
// Subnets are 10.x.y.0/24 and VTEP addresses 10.200.x.y, inside the
// namespace only; nothing is ever sent.
//
// Run as root: go run ./hack/dpbench [-sizes 1000,10000] [-per-vtep 5]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"

	"github.com/flannel-registrar/flannel-registrar/cmd/flannel-registrar/app"
)

const iface = "flannel.1"

var localIP = netip.MustParseAddr("198.51.100.1")

var workers int // of the fdb and routes runners

var memprofile string

func main() {
	sizes := flag.String("sizes", "1000,10000", "comma-separated numbers of remote subnets")
	perVTEP := flag.Int("per-vtep", 5, "subnets behind each remote VTEP")
	watch := flag.Bool("watch", true, "run the netlink watcher, as the daemon does")
	flag.IntVar(&workers, "workers", 2, "workers of the fdb and routes runners (the daemon runs 2)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.StringVar(&memprofile, "memprofile", "", "write a heap profile (after the last cold converge) to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dpbench:", err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "dpbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *sizes, *perVTEP, *watch); err != nil {
		fmt.Fprintln(os.Stderr, "dpbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, sizes string, perVTEP int, watch bool) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "subnets\tVTEPs\tcold converge\troutes\tneighs\tfdb\twrites\tresync (runners)\tresync writes\tresync (one pass)\tone-pass writes\t")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("size %q: not a positive number", s)
		}
		row, err := measure(ctx, n, perVTEP, watch)
		if err != nil {
			return fmt.Errorf("%d subnets: %w", n, err)
		}
		_, _ = fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// bench is one namespace with a flannel.1 and the controllers.
type bench struct {
	name  string
	ns    netns.NsHandle
	nl    *netlink.Handle
	h     *netlinkx.Handle
	store *state.Store
	mgr   *reconcile.Manager
	fdb   *fdb.Controller
	ctrls []controller
}

// controller is a controller as the app wires it.
type controller interface {
	reconcile.Controller
	KeysFor(state.Event) []string
}

func measure(ctx context.Context, n, perVTEP int, watch bool) (string, error) {
	b, err := newBench()
	if err != nil {
		return "", err
	}
	defer b.close()
	vteps := fill(b.store, n, perVTEP)

	// Cold start: the runners and the watcher, exactly as the daemon runs them.
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	wg.Go(func() { b.mgr.Run(rctx) })
	if watch {
		w := nlwatch.New(b.h, nlwatch.Options{Iface: iface, OnChange: app.KernelChanges(b.mgr, b.fdb.KeysForIP),
			Resync: func() { _ = b.mgr.Resync(rctx, "netlink:subscribed") }})
		wg.Go(func() { _ = w.Run(rctx) })
	}
	if err := b.waitWrites(ctx, n, vteps, neighbours(n, perVTEP)); err != nil {
		return "", err
	}
	cold := time.Since(start)
	if err := b.waitIdle(ctx); err != nil {
		return "", err
	}
	if memprofile != "" {
		if err := writeHeap(memprofile); err != nil {
			return "", err
		}
	}
	ws := b.h.WriteStats()

	// One resync through the runners: every key of every controller queued
	// and reconciled.
	keys, err := b.keyCount(ctx)
	if err != nil {
		return "", err
	}
	before := b.reconciles()
	t0 := time.Now()
	if err := b.mgr.Resync(ctx, "resync"); err != nil {
		return "", err
	}
	if err := b.waitReconciles(ctx, before+uint64(keys)); err != nil {
		return "", err
	}
	resync := time.Since(t0)
	resyncWrites := b.h.Writes() - ws.Total()

	// One pass in the caller's goroutine (one-shot mode, no concurrency).
	w0 := b.h.Writes()
	t1 := time.Now()
	if err := b.mgr.Once(ctx); err != nil {
		return "", err
	}
	once := time.Since(t1)
	onceWrites := b.h.Writes() - w0

	return fmt.Sprintf("%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%d\t", n, vteps, cold.Round(time.Millisecond),
		ws.RouteReplace, ws.NeighSet, ws.FDBSet, ws.Total(), resync.Round(time.Millisecond), resyncWrites,
		once.Round(time.Millisecond), onceWrites), nil
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBench() (*bench, error) {
	b := &bench{name: fmt.Sprintf("frdp-bench-%d", os.Getpid())}
	if out, err := exec.Command("ip", "netns", "add", b.name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add: %w: %s", err, out)
	}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	var err error
	if b.ns, err = netns.GetFromName(b.name); err != nil {
		return nil, err
	}
	if b.nl, err = netlink.NewHandleAt(b.ns); err != nil {
		return nil, err
	}
	if b.h, err = netlinkx.New(b.nl, b.ns); err != nil {
		return nil, err
	}
	if err := b.device(); err != nil {
		return nil, err
	}
	b.store = state.New()
	b.fdb = fdb.New(b.h, b.store, fdb.Options{Host: "bench"})
	vx := vxlan.New(b.h, b.store, iface)
	rt := routes.New(b.h, b.store, routes.Options{Host: "bench"})
	b.mgr = reconcile.NewManager(0, quiet())
	b.ctrls = []controller{vx, b.fdb, rt}
	for _, c := range b.ctrls {
		o := reconcile.Options{}
		if c.Name() != vxlan.Name {
			o.Workers = workers
		}
		b.mgr.Add(c, o)
	}
	b.store.Subscribe(func(ev state.Event) {
		for _, c := range b.ctrls {
			for _, k := range c.KeysFor(ev) {
				b.mgr.Enqueue(c.Name(), k, ev.Trigger)
			}
		}
	})
	ok = true
	return b, nil
}

func (b *bench) device() error {
	if err := b.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	ul, err := b.nl.LinkByName("ul0")
	if err != nil {
		return err
	}
	if err := b.nl.AddrAdd(ul, &netlink.Addr{IPNet: netlinkx.IPNet(netip.PrefixFrom(localIP, 24))}); err != nil {
		return err
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: iface}, VxlanId: 1, VtepDevIndex: ul.Attrs().Index,
		SrcAddr: localIP.AsSlice(), Port: 8472}
	if err := b.nl.LinkAdd(vx); err != nil {
		return fmt.Errorf("add vxlan: %w", err)
	}
	for _, name := range []string{"lo", "ul0", "ul1", iface} {
		l, err := b.nl.LinkByName(name)
		if err != nil {
			return err
		}
		if err := b.nl.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) close() {
	if b.h != nil {
		b.h.Close()
	}
	if b.nl != nil {
		b.nl.Close()
	}
	if b.ns.IsOpen() {
		b.ns.Close()
	}
	if out, err := exec.Command("ip", "netns", "del", b.name).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "dpbench: ip netns del %s: %v: %s\n", b.name, err, out)
	}
}

// fill stores n remote subnets, perVTEP behind each VTEP (the first of each
// VTEP a flanneld lease, the others network records), and returns the
// number of VTEPs.
func fill(store *state.Store, n, perVTEP int) int {
	leases := map[netip.Prefix]state.Lease{}
	networks := map[string]registry.Network{}
	vteps := 0
	for i := range n {
		v := i / perVTEP
		if i%perVTEP == 0 {
			vteps++
		}
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		pub := netip.AddrFrom4([4]byte{10, 200, byte(v >> 8), byte(v)})
		mac := net.HardwareAddr{0x02, 0xbe, 0, 0, byte(v >> 8), byte(v)}
		host := fmt.Sprintf("h%d", v)
		if i%perVTEP == 0 {
			leases[subnet] = state.Lease{Subnet: subnet, Raw: flannel.NewVXLAN(pub, 1, mac), PublicIP: pub, VNI: 1, VtepMAC: mac}
			continue
		}
		name := fmt.Sprintf("net%d", i)
		networks["/flannel/network/subnets/"+host+"/"+name] = registry.Network{Host: host, Network: name,
			Subnet: subnet, PublicIP: pub, VtepMAC: mac, VNI: 1}
	}
	store.ReplaceEtcd(state.EtcdView{Networks: networks, Leases: leases}, "bench:list")
	return vteps
}

// waitFor calls fn every 2ms until it returns nil, for at most 10 minutes.
func waitFor(ctx context.Context, fn func() error) error {
	return poll.Until(ctx, 10*time.Minute, 2*time.Millisecond, fn)
}

// neighbours is the number of neighbours n subnets need: one per lease
// (flannel's shape) and one per VTEP with records (their shared gateway).
func neighbours(n, perVTEP int) int {
	out := 0
	for i := 0; i < n; i += perVTEP {
		out++ // the VTEP's lease
		if min(perVTEP, n-i) > 1 {
			out++ // its records' shared gateway
		}
	}
	return out
}

func (b *bench) waitWrites(ctx context.Context, n, vteps, neighs int) error {
	return waitFor(ctx, func() error {
		w := b.h.WriteStats()
		if w.RouteReplace < uint64(n) || w.NeighSet < uint64(neighs) || w.FDBSet < uint64(vteps) {
			return fmt.Errorf("not converged: %+v", w)
		}
		return nil
	})
}

func (b *bench) waitIdle(ctx context.Context) error {
	stable := 0
	last := b.reconciles()
	return waitFor(ctx, func() error {
		r := b.reconciles()
		busy := r != last
		for _, c := range b.ctrls {
			busy = busy || b.mgr.Runner(c.Name()).Len() > 0
		}
		last = r
		if busy {
			stable = 0
			return errors.New("busy")
		}
		if stable++; stable < 25 {
			return errors.New("settling")
		}
		return nil
	})
}

func (b *bench) reconciles() uint64 {
	var total uint64
	for _, s := range b.mgr.Stats() {
		total += s.Reconciles
	}
	return total
}

func (b *bench) keyCount(ctx context.Context) (int, error) {
	total := 0
	for _, c := range b.ctrls {
		ks, err := c.Keys(ctx)
		if err != nil {
			return 0, err
		}
		total += len(ks)
	}
	return total, nil
}

// waitReconciles waits until the runners have done target reconciles in
// total and their queues are empty.
func (b *bench) waitReconciles(ctx context.Context, target uint64) error {
	return waitFor(ctx, func() error {
		if r := b.reconciles(); r < target {
			return fmt.Errorf("%d reconciles, want %d", r, target)
		}
		for _, c := range b.ctrls {
			if b.mgr.Runner(c.Name()).Len() > 0 {
				return errors.New("queued keys remain")
			}
		}
		return nil
	})
}
