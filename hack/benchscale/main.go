// Command benchscale measures, side by side in one run, what it costs to
// bring up a host's overlay state for N remote subnets from a cold start:
//
//   - real flanneld (the lab's build) on N flannel vxlan leases,
//   - the registrar (the real binary, with a real dockerd) on the same N leases,
//   - the kernel floor for the same objects (neighbours + routes via `ip -batch`),
//   - the registrar on N network records (-per-vtep records per remote host),
//   - the kernel floor for the records' shape (one gateway per VTEP),
//   - the registrar, N records installed: one new record until its route,
//     neighbour and FDB entry are all in place.
//
// Every run gets a fresh network namespace (flannel.1 on a veth underlay in
// 198.51.100.0/24) joined to one namespace holding one real etcd (the lab's
// labetcd); nothing in the root namespace changes, and no packet is sent
// beyond the namespaces. Time is from the process start until N routes are
// on flannel.1; peak RSS is the process's VmHWM and CPU its user+system
// time, both read at that moment.
//
// Run as root: go run ./hack/benchscale [-sizes 1000,10000] [-per-vtep 5]
// (make bench-scale). It is a benchmark, not a test: CI does not run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

const (
	iface         = "flannel.1"
	etcdIP        = "198.51.100.2"
	hostIP        = "198.51.100.10"
	flannelPrefix = "/coreos.com/network"
	recordPrefix  = "/flannel/network/subnets"
	// flannelConfig: leases and records are 10.x.y.0/24; VTEP addresses
	// are 172.20.x.y (never contacted: only FDB destinations).
	flannelConfig = `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}`
)

func main() {
	sizes := flag.String("sizes", "1000,10000", "comma-separated numbers of remote subnets")
	perVTEP := flag.Int("per-vtep", 5, "records per remote host in the records runs")
	timeout := flag.Duration("timeout", 5*time.Minute, "longest wait for one run to converge")
	flag.BoolVar(&keep, "keep", false, "keep the work directory (logs of every run) and print its path")
	flag.BoolVar(&skipLeases, "records-only", false, "only the records runs")
	flag.StringVar(&extraEnv, "registrar-env", "", "extra environment of the registrar runs, comma-separated K=V (e.g. GOGC=50)")
	flag.IntVar(&load.hosts, "load-hosts", 0, "instead of the table: etcd's request counters for one registrar "+
		"among this many simulated hosts' records (5 each), over -load-window")
	flag.DurationVar(&load.window, "load-window", 5*time.Minute, "window of the etcd load measurement")
	flag.DurationVar(&load.interval, "load-interval", time.Minute, "the registrar's INTERVAL in the etcd load measurement")
	flag.IntVar(&load.locals, "load-locals", 2, "local Docker networks of the measured registrar")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *sizes, *perVTEP, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

var (
	keep, skipLeases bool
	extraEnv         string
)

// load configures the etcd load measurement.
var load struct {
	hosts, locals    int
	window, interval time.Duration
}

type row struct {
	who  string
	n    int
	time time.Duration
	rss  uint64 // KiB; 0: not measured
	cpu  time.Duration
	note string
}

func run(ctx context.Context, sizes string, perVTEP int, timeout time.Duration) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	var ns []int
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > 60000 {
			return fmt.Errorf("bad size %q (1..60000)", s)
		}
		ns = append(ns, n)
	}
	b, err := setup(ctx)
	if err != nil {
		return err
	}
	defer b.close()
	b.timeout = timeout
	if load.hosts > 0 {
		return b.etcdLoad(ctx)
	}
	var rows []row
	for _, n := range ns {
		rs, err := b.size(ctx, n, perVTEP)
		rows = append(rows, rs...)
		if err != nil {
			printRows(rows)
			return fmt.Errorf("N=%d: %w", n, err)
		}
	}
	printRows(rows)
	return nil
}

func printRows(rows []row) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "who, what\tN\ttime\tpeak RSS\tCPU\t")
	for _, r := range rows {
		rss, cpu := "–", "–"
		if r.rss > 0 {
			rss = fmt.Sprintf("%.0f MiB", float64(r.rss)/1024)
			cpu = fmt.Sprintf("%.2f s", r.cpu.Seconds())
		}
		who := r.who
		if r.note != "" {
			who += " (" + r.note + ")"
		}
		_, _ = fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t\n", who, r.n, r.time.Round(time.Millisecond), rss, cpu)
	}
	_ = w.Flush()
}

// bench holds what all runs share: the binaries, the etcd namespace and its
// server, and a client.
type bench struct {
	dir       string
	etcdNS    string
	registrar string
	flanneld  string
	etcd      *proc
	cli       *clientv3.Client
	timeout   time.Duration
	runs      int
	sock      string        // etcd's unix socket
	locals    int           // local Docker networks of the registrar runs
	interval  time.Duration // the registrar's INTERVAL (0: 60 s)
}

func setup(ctx context.Context) (b *bench, err error) {
	b = &bench{etcdNS: fmt.Sprintf("frscale-%d-etcd", os.Getpid())}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.dir, err = os.MkdirTemp("", "frscale-"); err != nil {
		return b, err
	}
	if b.flanneld, err = lab.FindFlanneld(); err != nil {
		return b, err
	}
	root, err := lab.FindRepoRoot()
	if err != nil {
		return b, err
	}
	b.registrar = filepath.Join(b.dir, "flannel-registrar")
	etcdBin := filepath.Join(b.dir, "labetcd")
	for pkg, out := range map[string]string{"./cmd/flannel-registrar": b.registrar, "./hack/labetcd": etcdBin} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w: %s", pkg, err, o)
		}
	}
	if err := ipCmd("netns", "add", b.etcdNS); err != nil {
		return b, err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", etcdIP + "/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		if err := ipCmd(append([]string{"-n", b.etcdNS}, args...)...); err != nil {
			return b, err
		}
	}
	sock := filepath.Join(b.dir, "etcd.sock")
	b.sock = sock
	b.etcd, err = start(b.etcdNS, filepath.Join(b.dir, "etcd.log"), nil, etcdBin,
		"--data-dir", filepath.Join(b.dir, "etcd"), "--client-url", "http://"+etcdIP+":2379",
		"--peer-url", "http://"+etcdIP+":2380", "--unix-socket", sock,
		"--flannel-prefix", flannelPrefix, "--flannel-config", flannelConfig)
	if err != nil {
		return b, err
	}
	if b.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		return b, err
	}
	err = poll.Until(ctx, time.Minute, 100*time.Millisecond, func() error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := b.cli.Get(c, flannelPrefix+"/config")
		if err == nil && len(resp.Kvs) == 0 {
			err = errors.New("no flannel config yet")
		}
		return err
	})
	return b, err
}

func (b *bench) close() {
	if b.cli != nil {
		_ = b.cli.Close()
	}
	if b.etcd != nil {
		b.etcd.stop()
	}
	_ = ipCmd("netns", "del", b.etcdNS)
	switch {
	case b.dir != "" && keep:
		fmt.Fprintln(os.Stderr, "benchscale: work directory kept:", b.dir)
	case b.dir != "":
		_ = os.RemoveAll(b.dir)
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// ---- the runs of one size ----

// vtep i's identity: address 172.20.x.y, MAC 02:be:00:0x:xx:xx.
func vtepIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 20 + byte(i>>16), byte(i >> 8), byte(i)})
}
func vtepMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xbe, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// subnet i: 10.x.y.0/24 from 10.1.0.0 up (flanneld takes its own lease
// from what is left of 10/8).
func subnet(i int) netip.Prefix {
	j := i + 256
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 8), byte(j), 0}), 24)
}

func (b *bench) size(ctx context.Context, n, perVTEP int) ([]row, error) {
	var rows []row
	if !skipLeases {
		rs, err := b.leaseRuns(ctx, n)
		if rows = append(rows, rs...); err != nil {
			return rows, err
		}
	}
	return b.recordRuns(ctx, n, perVTEP, rows)
}

func (b *bench) leaseRuns(ctx context.Context, n int) ([]row, error) {
	var rows []row
	if err := b.clear(ctx); err != nil {
		return rows, err
	}
	if err := b.putLeases(ctx, n); err != nil {
		return rows, err
	}
	r, err := b.flanneldRun(ctx, n)
	if err != nil {
		return rows, fmt.Errorf("flanneld: %w", err)
	}
	rows = append(rows, r)
	if r, err = b.registrarRun(ctx, n, "registrar, the same flannel leases", nil); err != nil {
		return rows, fmt.Errorf("registrar on leases: %w", err)
	}
	rows = append(rows, r)
	if r, err = b.floor(ctx, n, 1, "kernel floor, leases' shape (ip -batch)"); err != nil {
		return rows, err
	}
	rows = append(rows, r)
	return rows, nil
}

func (b *bench) recordRuns(ctx context.Context, n, perVTEP int, rows []row) ([]row, error) {
	if err := b.clear(ctx); err != nil {
		return rows, err
	}
	if err := b.putRecords(ctx, n, perVTEP); err != nil {
		return rows, err
	}
	var react time.Duration
	note := fmt.Sprintf("%d per host", perVTEP)
	r, err := b.registrarRun(ctx, n, "registrar, network records", func(ctx context.Context, h *netlinkx.Handle) error {
		var err error
		react, err = b.newRecord(ctx, h, n, perVTEP)
		return err
	})
	if err != nil {
		return rows, fmt.Errorf("registrar on records: %w", err)
	}
	r.note = note
	rows = append(rows, r)
	if r, err = b.floor(ctx, n, perVTEP, "kernel floor, records' shape (ip -batch)"); err != nil {
		return rows, err
	}
	rows = append(rows, r)
	rows = append(rows, row{who: "registrar, one new record with N installed: route + neighbour + FDB", n: n, time: react})
	return rows, nil
}

// clear removes every lease and record (flannel's config stays).
func (b *bench) clear(ctx context.Context) error {
	for _, p := range []string{flannelPrefix + "/subnets/", recordPrefix + "/"} {
		if _, err := b.cli.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
			return fmt.Errorf("clear %s: %w", p, err)
		}
	}
	return nil
}

func (b *bench) putBatched(ctx context.Context, kvs [][2]string) error {
	const batch = 100 // below etcd's default max txn ops (128)
	for i := 0; i < len(kvs); i += batch {
		var ops []clientv3.Op
		for _, kv := range kvs[i:min(i+batch, len(kvs))] {
			ops = append(ops, clientv3.OpPut(kv[0], kv[1]))
		}
		if _, err := b.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("put: %w", err)
		}
	}
	return nil
}

func (b *bench) putLeases(ctx context.Context, n int) error {
	kvs := make([][2]string, 0, n)
	for i := range n {
		v, err := flannel.Encode(flannel.NewVXLAN(vtepIP(i), 1, vtepMAC(i)))
		if err != nil {
			return err
		}
		kvs = append(kvs, [2]string{flannelPrefix + "/subnets/" + flannel.SubnetKey(subnet(i)), string(v)})
	}
	return b.putBatched(ctx, kvs)
}

func record(i, perVTEP int) (string, string, error) {
	v := i / perVTEP
	host, name := fmt.Sprintf("h%d", v), fmt.Sprintf("net%d", i)
	val, err := registry.EncodeNetwork(registry.Network{Host: host, Network: name, Subnet: subnet(i),
		PublicIP: vtepIP(v), VtepMAC: vtepMAC(v), VNI: 1})
	return recordPrefix + "/" + host + "/" + name, string(val), err
}

func (b *bench) putRecords(ctx context.Context, n, perVTEP int) error {
	kvs := make([][2]string, 0, n)
	for i := range n {
		k, v, err := record(i, perVTEP)
		if err != nil {
			return err
		}
		kvs = append(kvs, [2]string{k, v})
	}
	return b.putBatched(ctx, kvs)
}

// ---- one run ----

// host is a fresh namespace with an underlay veth to the etcd namespace.
type host struct {
	name string
	dir  string
	h    *netlinkx.Handle
	ns   netns.NsHandle
}

func (b *bench) newHost(vxlan bool) (*host, error) {
	b.runs++
	h := &host{name: fmt.Sprintf("frscale-%d-%d", os.Getpid(), b.runs), dir: filepath.Join(b.dir, fmt.Sprintf("run%d", b.runs))}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	if err := ipCmd("netns", "add", h.name); err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("v%d", b.runs)
	cmds := [][]string{
		{"-n", h.name, "link", "set", "lo", "up"},
		{"-n", h.name, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", b.etcdNS},
		{"-n", h.name, "addr", "add", hostIP + "/24", "dev", "eth0"},
		{"-n", h.name, "link", "set", "eth0", "up"},
		{"-n", b.etcdNS, "link", "set", peer, "master", "br0", "up"},
	}
	if vxlan {
		cmds = append(cmds,
			[]string{"-n", h.name, "link", "add", iface, "type", "vxlan", "id", "1", "local", hostIP, "dev", "eth0", "dstport", "8472", "nolearning"},
			[]string{"-n", h.name, "link", "set", iface, "up"})
	}
	for _, c := range cmds {
		if err := ipCmd(c...); err != nil {
			h.close()
			return nil, err
		}
	}
	var err error
	if h.ns, err = netns.GetFromName(h.name); err != nil {
		h.close()
		return nil, err
	}
	if h.h, err = netlinkx.Open(h.ns); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *host) close() {
	if h.h != nil {
		h.h.Close()
	}
	if h.ns.IsOpen() {
		_ = h.ns.Close()
	}
	_ = ipCmd("netns", "del", h.name)
}

// tunnelRoutes counts the main table's routes on flannel.1.
func tunnelRoutes(h *netlinkx.Handle) (int, error) {
	l, err := h.LinkByName(iface)
	if err != nil {
		return 0, err
	}
	rs, err := h.Routes(&netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	return len(rs), err
}

// converge waits until n routes are on flannel.1 and returns the time since
// t0 and the process's peak RSS and CPU at that moment.
func (b *bench) converge(ctx context.Context, h *host, p *proc, n int, t0 time.Time) (row, error) {
	var got int
	err := untilAlive(ctx, p, b.timeout, 20*time.Millisecond, func() error {
		var err error
		if got, err = tunnelRoutes(h.h); err == nil && got < n {
			err = fmt.Errorf("%d of %d routes", got, n)
		}
		return err
	})
	d := time.Since(t0)
	if err != nil {
		return row{}, err
	}
	rss, cpu, err := p.usage()
	return row{n: n, time: d, rss: rss, cpu: cpu}, err
}

func (b *bench) flanneldRun(ctx context.Context, n int) (row, error) {
	h, err := b.newHost(false)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	t0 := time.Now()
	p, err := start(h.name, filepath.Join(h.dir, "flanneld.log"), nil, b.flanneld,
		"--etcd-endpoints=http://"+etcdIP+":2379", "--etcd-prefix="+flannelPrefix, "--iface=eth0",
		"--public-ip="+hostIP, "--subnet-file="+filepath.Join(h.dir, "subnet.env"))
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	r, err := b.converge(ctx, h, p, n, t0)
	r.who = "flanneld " + flanneldVersion(b.flanneld) + ", flannel vxlan leases"
	r.who = strings.Replace(r.who, "flanneld dev,", "flanneld,", 1)
	return r, err
}

func flanneldVersion(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// registrarRun starts dockerd and then the registrar in a fresh host with a
// flannel.1 of its own, waits for n routes, then runs after (if any) with
// the converged host.
func (b *bench) registrarRun(ctx context.Context, n int, who string, after func(context.Context, *netlinkx.Handle) error) (row, error) {
	h, err := b.newHost(true)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	sock := filepath.Join(h.dir, "docker.sock")
	cfg := filepath.Join(h.dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		return row{}, err
	}
	d, err := start(h.name, filepath.Join(h.dir, "dockerd.log"), nil, "dockerd", "--config-file", cfg,
		"--data-root", filepath.Join(h.dir, "docker"), "--exec-root", filepath.Join(h.dir, "exec"),
		"--pidfile", filepath.Join(h.dir, "docker.pid"), "-H", "unix://"+sock, "--bridge", "none", "--shutdown-timeout", "2")
	if err != nil {
		return row{}, err
	}
	defer d.stop()
	if err := untilAlive(ctx, d, 90*time.Second, 100*time.Millisecond, func() error {
		return exec.CommandContext(ctx, "docker", "-H", "unix://"+sock, "version").Run()
	}); err != nil {
		return row{}, err
	}
	for i := range b.locals {
		// Local networks of the measured host (10.250.i.0/24, outside the remote subnets).
		if out, err := exec.CommandContext(ctx, "docker", "-H", "unix://"+sock, "network", "create",
			"--subnet", fmt.Sprintf("10.250.%d.0/24", i), fmt.Sprintf("local%d", i)).CombinedOutput(); err != nil {
			return row{}, fmt.Errorf("docker network create: %w: %s", err, out)
		}
	}
	interval := b.interval
	if interval == 0 {
		interval = time.Minute
	}
	env := []string{"ETCD_ENDPOINT=http://" + etcdIP + ":2379", "HOST_NAME=bench", "DOCKER_HOST=unix://" + sock,
		"DOCKER_API_VERSION=1.41", "LOG_FORMAT=json", "ALLOWED_SUBNETS=10.0.0.0/8",
		fmt.Sprintf("INTERVAL=%d", int(interval.Seconds()))}
	if extraEnv != "" {
		env = append(env, strings.Split(extraEnv, ",")...)
	}
	t0 := time.Now()
	p, err := start(h.name, filepath.Join(h.dir, "registrar.log"), env, b.registrar)
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	r, err := b.converge(ctx, h, p, n, t0)
	r.who = who
	if err != nil || after == nil {
		return r, err
	}
	// "Installed" means converged and quiet: wait until the registrar has
	// used no CPU for 500 ms (the echoes of its own writes are processed).
	if err := quiet(ctx, p, b.timeout); err != nil {
		return r, err
	}
	return r, after(ctx, h.h)
}

// newRecord writes one record of a new host (new VTEP) and returns the time
// until its route, its VTEP's neighbour and FDB entry are all in place.
func (b *bench) newRecord(ctx context.Context, h *netlinkx.Handle, n, perVTEP int) (time.Duration, error) {
	i := ((n+perVTEP-1)/perVTEP + 1) * perVTEP // the first subnet of a VTEP with no records yet
	k, v, err := record(i, perVTEP)
	if err != nil {
		return 0, err
	}
	l, err := h.LinkByName(iface)
	if err != nil {
		return 0, err
	}
	idx, s, mac := l.Attrs().Index, subnet(i), vtepMAC(i/perVTEP)
	t0 := time.Now()
	if _, err := b.cli.Put(ctx, k, v); err != nil {
		return 0, err
	}
	err = poll.Until(ctx, b.timeout, time.Millisecond, func() error {
		rs, err := h.RoutesTo(s)
		if err != nil || len(rs) == 0 {
			return fmt.Errorf("no route to %s (%w)", s, err)
		}
		nb, err := h.Neigh(idx, netlinkx.Addr(rs[0].Gw))
		if err != nil || nb == nil || nb.HardwareAddr.String() != mac.String() {
			return fmt.Errorf("no neighbour %s (%w)", rs[0].Gw, err)
		}
		f, err := h.FDBEntry(idx, mac)
		if err != nil || f == nil {
			return fmt.Errorf("no fdb entry %s (%w)", mac, err)
		}
		return nil
	})
	return time.Since(t0), err
}

// floor programs the same objects with one `ip -batch` (neighbours first,
// then routes) and a `bridge -batch` for the FDB entries in a fresh host:
// perVTEP 1 is the leases' shape (each subnet via its own address), more
// the records' (each VTEP's subnets via its first subnet's address).
func (b *bench) floor(ctx context.Context, n, perVTEP int, who string) (row, error) {
	h, err := b.newHost(true)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	var neigh, routes, fdb strings.Builder
	for i := range n {
		v := i / perVTEP
		gw := subnet(v * perVTEP).Addr()
		if i%perVTEP == 0 {
			fmt.Fprintf(&neigh, "neigh replace %s lladdr %s dev %s nud permanent\n", gw, vtepMAC(v), iface)
			fmt.Fprintf(&fdb, "fdb append %s dev %s dst %s self permanent\n", vtepMAC(v), iface, vtepIP(v))
		}
		fmt.Fprintf(&routes, "route replace %s via %s dev %s onlink\n", subnet(i), gw, iface)
	}
	ipBatch := filepath.Join(h.dir, "ip.batch")
	bridgeBatch := filepath.Join(h.dir, "bridge.batch")
	if err := os.WriteFile(ipBatch, []byte(neigh.String()+routes.String()), 0o644); err != nil {
		return row{}, err
	}
	if err := os.WriteFile(bridgeBatch, []byte(fdb.String()), 0o644); err != nil {
		return row{}, err
	}
	t0 := time.Now()
	for _, c := range [][]string{{"ip", "-n", h.name, "-batch", ipBatch}, {"nsenter", "--net=" + lab.NetnsPath(h.name), "bridge", "-batch", bridgeBatch}} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return row{}, fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	d := time.Since(t0)
	got, err := tunnelRoutes(h.h)
	if err == nil && got != n {
		err = fmt.Errorf("floor: %d routes, want %d", got, n)
	}
	return row{who: who, n: n, time: d}, err
}

// quiet waits until p used no CPU time for 500 ms.
func quiet(ctx context.Context, p *proc, timeout time.Duration) error {
	_, last, err := p.usage()
	if err != nil {
		return err
	}
	still := 0
	return untilAlive(ctx, p, timeout, 100*time.Millisecond, func() error {
		_, cpu, err := p.usage()
		if err != nil {
			return err
		}
		if cpu != last {
			last, still = cpu, 0
			return errors.New("registrar still busy")
		}
		if still++; still < 5 {
			return errors.New("registrar quiet for less than 500 ms")
		}
		return nil
	})
}

// ---- etcd load ----

// etcdLoad runs one registrar (with load.locals local networks) among
// load.hosts simulated hosts' records and reports the gRPC requests etcd
// received during load.window, after convergence, by method.
func (b *bench) etcdLoad(ctx context.Context) error {
	const perHost = 5
	n := load.hosts * perHost
	if err := b.clear(ctx); err != nil {
		return err
	}
	if err := b.putRecords(ctx, n, perHost); err != nil {
		return err
	}
	b.locals, b.interval = load.locals, load.interval
	_, err := b.registrarRun(ctx, n, "", func(ctx context.Context, _ *netlinkx.Handle) error {
		// Let the start-up writes (registration, host record) settle.
		if err := sleep(ctx, 5*time.Second); err != nil {
			return err
		}
		before, err := b.grpcCounts(ctx)
		if err != nil {
			return err
		}
		if err := sleep(ctx, load.window); err != nil {
			return err
		}
		after, err := b.grpcCounts(ctx)
		if err != nil {
			return err
		}
		mins := load.window.Minutes()
		fmt.Printf("etcd requests from one registrar (INTERVAL %s, %d local networks) among %d hosts' records (%d remote subnets), over %s:\n",
			load.interval, load.locals, load.hosts, n, load.window)
		w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(w, "gRPC method\trequests\tper minute\t")
		total := 0.0
		for m, v := range after {
			if d := v - before[m]; d > 0 {
				_, _ = fmt.Fprintf(w, "%s\t%.0f\t%.1f\t\n", m, d, d/mins)
				total += d
			}
		}
		_, _ = fmt.Fprintf(w, "all\t%.0f\t%.1f\t\n", total, total/mins)
		return w.Flush()
	})
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// grpcCounts reads etcd's /metrics (through the unix socket) and returns
// grpc_server_msg_received_total by gRPC method (streams count each message,
// so keep-alives are counted one by one).
func (b *bench) grpcCounts(ctx context.Context) (map[string]float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", b.sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://etcd/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "grpc_server_msg_received_total{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(labels, ",") {
			if m, ok := strings.CutPrefix(l, "grpc_method="); ok {
				out[strings.Trim(m, `"`)] += v
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("etcd metrics: no grpc_server_msg_received_total")
	}
	return out, nil
}

// ---- processes ----

// untilAlive polls check like poll.Until, and gives up at once when p exits.
func untilAlive(ctx context.Context, p *proc, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := poll.Until(ctx, timeout, interval, func() error {
		if p.exited() {
			cancel()
			return fmt.Errorf("%s exited (see %s)", p.name, p.log)
		}
		return check()
	})
	return err
}

// proc is a daemon started in a namespace (nsenter execs it: the pid is the
// daemon's own).
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(nsName, logPath string, env []string, argv0 string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + lab.NetnsPath(nsName), "--", argv0}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv0, err)
	}
	p := &proc{name: filepath.Base(argv0), log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }() // owned by p; joined in stop
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 10 s, and waits for the exit.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// usage returns the process's peak RSS (KiB) and user+system CPU time.
func (p *proc) usage() (uint64, time.Duration, error) {
	pid := p.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var rss uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			rss, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return rss, 0, err
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 14th and 15th fields, in clock ticks (100 per second).
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return rss, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return rss, time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
