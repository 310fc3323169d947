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
// [-repeat 3] (make bench-scale). With -repeat K every row is run K times,
// interleaved (all rows once, then again), and the table gives each row's
// median and range: on a shared machine one run of a row can differ from
// the next by half. Under the table, the goals as ratios of the
// medians. It is a benchmark, not a test: CI does not run it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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
	flag.IntVar(&repeat, "repeat", 1, "runs of every row (interleaved); the table gives each row's median and range")
	flag.BoolVar(&keep, "keep", false, "keep the work directory (logs of every run) and print its path")
	flag.BoolVar(&skipLeases, "records-only", false, "only the records runs")
	flag.BoolVar(&profile, "profile", false, "write the registrar's CPU and heap profiles (cpu.pprof, heap.pprof at exit, heap-peak.pprof at the largest live heap) into each run's "+
		"directory of the kept work directory (implies -keep; go tool pprof -top <binary> <profile>)")
	flag.DurationVar(&hold, "hold", 0, "keep each converged flanneld and registrar running this long before reading its peak RSS (CPU is still read at convergence)")
	flag.StringVar(&extraEnv, "registrar-env", "", "extra environment of the registrar runs, comma-separated K=V (e.g. GOGC=50)")
	flag.IntVar(&load.hosts, "load-hosts", 0, "instead of the table: etcd's request counters for one registrar "+
		"among this many simulated hosts' records (5 each), over -load-window")
	flag.DurationVar(&load.window, "load-window", 5*time.Minute, "window of the etcd load measurement")
	flag.DurationVar(&load.interval, "load-interval", time.Minute, "the registrar's INTERVAL in the etcd load measurement")
	flag.IntVar(&load.locals, "load-locals", 2, "local Docker networks of the measured registrar")
	flag.Parse()
	keep = keep || profile
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *sizes, *perVTEP, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

var (
	keep, skipLeases, profile bool
	repeat                    int
	extraEnv                  string
	// hold keeps each converged daemon running this long before its peak
	// RSS is read: a start-up that ends with less garbage collection than
	// steady state must show the steady state's peak too.
	hold time.Duration
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
	// minTime, maxTime: the range over the row's runs (summarise).
	minTime, maxTime time.Duration
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
	if repeat < 1 || repeat > 20 {
		return fmt.Errorf("bad -repeat %d (1..20)", repeat)
	}
	var rows []row
	for _, n := range ns {
		for k := range repeat {
			rs, err := b.size(ctx, n, perVTEP)
			rows = append(rows, rs...)
			if err != nil {
				printRows(summarise(rows))
				return fmt.Errorf("N=%d, run %d of %d: %w", n, k+1, repeat, err)
			}
		}
	}
	sum := summarise(rows)
	printRows(sum)
	printGoals(os.Stdout, sum)
	return nil
}

func printRows(rows []row) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	header := "who, what\tN\ttime\tpeak RSS\tCPU\t"
	if repeat > 1 {
		header = fmt.Sprintf("who, what\tN\ttime (median of %d)\ttime range\tpeak RSS\tCPU\t", repeat)
	}
	_, _ = fmt.Fprintln(w, header)
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
		if repeat > 1 {
			_, _ = fmt.Fprintf(w, "%s\t%d\t%s\t%s–%s\t%s\t%s\t\n", who, r.n, r.time.Round(time.Millisecond),
				r.minTime.Round(time.Millisecond), r.maxTime.Round(time.Millisecond), rss, cpu)
			continue
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
		if out == b.registrar {
			// As the Dockerfile builds it: the product's RSS. A cgo build
			// maps libc and its loader besides (4 MiB more RSS idle).
			cmd = exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
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
	if r, err = b.registrarRun(ctx, n, whoLeases, nil); err != nil {
		return rows, fmt.Errorf("registrar on leases: %w", err)
	}
	rows = append(rows, r)
	if r, err = b.floor(ctx, n, 1, whoLeasesFloor); err != nil {
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
	r, err := b.registrarRun(ctx, n, whoRecords, func(ctx context.Context, h *netlinkx.Handle) error {
		var err error
		react, err = b.newRecord(ctx, h, n, perVTEP)
		return err
	})
	if err != nil {
		return rows, fmt.Errorf("registrar on records: %w", err)
	}
	r.note = note
	rows = append(rows, r)
	if r, err = b.floor(ctx, n, perVTEP, whoRecordsFloor); err != nil {
		return rows, err
	}
	rows = append(rows, r)
	rows = append(rows, row{who: whoNewRecord, n: n, time: react})
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

// putRecords writes n records, perVTEP per simulated host, and every
// simulated host's host record, as each registrar publishes one: the trust
// boundary looks host records up for every record (a cost to measure).
func (b *bench) putRecords(ctx context.Context, n, perVTEP int) error {
	kvs := make([][2]string, 0, n+n/perVTEP+1)
	keys := registry.Keys{FlannelPrefix: flannelPrefix, ConfigPrefix: recordPrefix}
	for i := range n {
		k, v, err := record(i, perVTEP)
		if err != nil {
			return err
		}
		kvs = append(kvs, [2]string{k, v})
		if i%perVTEP == 0 {
			v := i / perVTEP
			h, err := json.Marshal(registry.HostRecord{Host: fmt.Sprintf("h%d", v), PublicIP: vtepIP(v).String(),
				VtepMAC: vtepMAC(v).String(), VNI: 1, Version: "bench", StartTime: time.Unix(0, 0).UTC()})
			if err != nil {
				return err
			}
			kvs = append(kvs, [2]string{keys.Host(fmt.Sprintf("h%d", v)), string(h)})
		}
	}
	return b.putBatched(ctx, kvs)
}
