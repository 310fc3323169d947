package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/dockertest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// daemonBinary builds the real binary once per test run.
func daemonBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fr-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "flannel-registrar")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// node is one simulated host: a namespace with an underlay address and a
// real flannel.1, a real dockerd inside it, and the real daemon binary run
// inside it against the test's embedded etcd.
type node struct {
	t      testing.TB
	ns     *testutil.Netns
	docker *dockertest.Daemon
	etcd   *clientv3.Client
	local  netip.Addr
	mac    net.HardwareAddr
	host   string

	mu     sync.Mutex // guards logs
	logs   bytes.Buffer
	cmd    *exec.Cmd
	done   chan struct{}
	health string
}

var keys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

func newNode(t testing.TB, srv *etcdtest.Server, host string, local netip.Addr) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "dockerd")
	ns := testutil.NewNetns(t, "frit")
	ul := netlinkxtest.Underlay(t, ns, local)
	mac := net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, local.As4()[3]}
	netlinkxtest.VXLAN(t, ns, "flannel.1", ul, local, mac)
	ns.Forward(t, "127.0.0.1:2379", srv.Endpoints()[0][len("http://"):])
	n := &node{t: t, ns: ns, etcd: srv.Client(t), local: local, mac: mac, host: host}
	n.docker = dockertest.Start(t, ns)
	return n
}

func (n *node) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.Write(p)
}

func (n *node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// start runs the daemon in the node's namespace; it is killed when the test ends.
func (n *node) start(extraEnv ...string) {
	t := n.t
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+n.ns.Path, daemonBinary(t), "run")
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"ETCD_ENDPOINT=http://127.0.0.1:2379",
		"DOCKER_HOST=" + n.docker.Host(),
		"HOST_NAME=" + n.host,
		"INTERVAL=5",
		"LOG_FORMAT=json",
		"DEBUG=true",
		"ALLOWED_SUBNETS=198.18.0.0/15", // the tests' networks are in the benchmark range
		"HEALTH_FILE=" + n.healthFile(),
	}, extraEnv...)
	cmd.Stdout, cmd.Stderr = n, n
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()
	t.Cleanup(n.stop)
}

// healthFile is the node's heartbeat file (one per node: daemons of one
// test run side by side).
func (n *node) healthFile() string {
	if n.health == "" {
		n.health = filepath.Join(n.t.TempDir(), "health")
	}
	return n.health
}

func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
	if n.t.Failed() {
		n.t.Logf("daemon %s log:\n%s", n.host, n.Logs())
	}
}

func (n *node) get(key string) ([]byte, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := n.etcd.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, false
	}
	return resp.Kvs[0].Value, true
}

// registered checks the record and the reservation of network, value by value.
func (n *node) registered(network, subnet string) error {
	p := netip.MustParsePrefix(subnet)
	rv, ok := n.get(keys.Network(n.host, network))
	if !ok {
		return fmt.Errorf("no record %s", keys.Network(n.host, network))
	}
	rec, err := registry.DecodeNetwork(rv)
	if err != nil {
		return err
	}
	if rec.Subnet != p || rec.PublicIP != n.local || rec.VtepMAC.String() != n.mac.String() || rec.Host != n.host || rec.VNI != 1 {
		return fmt.Errorf("record %s = %s", network, rv)
	}
	lv, ok := n.get(keys.Subnet(p))
	if !ok {
		return fmt.Errorf("no reservation %s", keys.Subnet(p))
	}
	l, err := flannel.Decode(lv)
	if err != nil {
		return err
	}
	res, err := l.Reservation()
	if err != nil {
		return fmt.Errorf("reservation %s = %s: %w", keys.Subnet(p), lv, err)
	}
	if l.PublicIP != "0.0.0.0" || res.Host != n.host || res.Network != network {
		return fmt.Errorf("reservation %s = %s", keys.Subnet(p), lv)
	}
	return nil
}

func (n *node) unregistered(network, subnet string) error {
	if v, ok := n.get(keys.Network(n.host, network)); ok {
		return fmt.Errorf("record still there: %s", v)
	}
	if v, ok := n.get(keys.Subnet(netip.MustParsePrefix(subnet))); ok {
		return fmt.Errorf("reservation still there: %s", v)
	}
	return nil
}

func TestDaemonRegistersDockerNetworks(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-1", netip.MustParseAddr("198.51.100.11"))
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.1.0/24", "before")
	n.start()

	// A network that existed before the daemon started is registered by the list.
	testutil.Eventually(t, 20*time.Second, func() error { return n.registered("before", "198.19.1.0/24") })

	// Labelled-out and internal networks are never registered. They are created
	// before "app1", and "app1" being registered proves the daemon saw them.
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.2.0/24", "--label", "flannel-registrar.enable=false", "optout")
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.3.0/24", "--internal", "internal")
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.4.0/24", "app1")
	testutil.Eventually(t, 5*time.Second, func() error { return n.registered("app1", "198.19.4.0/24") })
	for _, c := range []struct{ name, subnet string }{{"optout", "198.19.2.0/24"}, {"internal", "198.19.3.0/24"}} {
		if err := n.unregistered(c.name, c.subnet); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}

	// docker network rm removes both within a second.
	n.docker.Docker(t, "network", "rm", "app1")
	testutil.Eventually(t, time.Second, func() error { return n.unregistered("app1", "198.19.4.0/24") })

	// The host record is there, and the log explains each change with its trigger.
	if v, ok := n.get(keys.Host("node-1")); !ok || !strings.Contains(string(v), `"PublicIP":"198.51.100.11"`) {
		t.Errorf("host record: %s", v)
	}
	testutil.Eventually(t, 2*time.Second, func() error {
		logs := n.Logs()
		for _, want := range []string{`"trigger":"docker:create app1"`, `"trigger":"docker:destroy app1"`, `"controller":"subnets"`, `"msg":"reconciled"`} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("log lacks %s", want)
			}
		}
		return nil
	})
}

// A daemon started before flanneld created its device waits, says why, and
// registers as soon as the device appears.
func TestDaemonWaitsForVXLANDevice(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-2", netip.MustParseAddr("198.51.100.12"))
	link, err := n.ns.Handle.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ns.Handle.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.5.0/24", "app5")
	n.start()
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(n.Logs(), "waiting for the VXLAN device") {
			return fmt.Errorf("no waiting message yet")
		}
		return nil
	})
	if err := n.unregistered("app5", "198.19.5.0/24"); err != nil {
		t.Fatalf("published before the device existed: %v", err)
	}
	ul, err := n.ns.Handle.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	netlinkxtest.VXLAN(t, n.ns, "flannel.1", ul, n.local, n.mac)
	testutil.Eventually(t, 5*time.Second, func() error { return n.registered("app5", "198.19.5.0/24") })
}

func TestInvalidSettingStopsAtStart(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"run"}, func(k string) string {
		if k == "INTERVAL" {
			return "often"
		}
		return ""
	}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `INTERVAL="often"`) || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"version"}, func(string) string { return "" }, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "flannel-registrar ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

// BenchmarkCreateToReservation measures the time from `docker network
// create` returning to the reservation being visible in etcd.
func BenchmarkCreateToReservation(b *testing.B) {
	srv := etcdtest.Start(b)
	n := newNode(b, srv, "bench", netip.MustParseAddr("198.51.100.13"))
	n.start()
	testutil.Eventually(b, 20*time.Second, func() error {
		_, ok := n.get(keys.Host("bench"))
		if !ok {
			return fmt.Errorf("daemon not up")
		}
		return nil
	})
	var total time.Duration
	var worst time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		subnet := fmt.Sprintf("198.19.%d.0/24", 100+i%100)
		name := fmt.Sprintf("bench%d", i)
		key := keys.Subnet(netip.MustParsePrefix(subnet))
		ctx, cancel := context.WithCancel(context.Background())
		wch := n.etcd.Watch(ctx, key)
		b.StartTimer()
		n.docker.Docker(b, "network", "create", "--subnet", subnet, name)
		start := time.Now()
		for resp := range wch {
			if len(resp.Events) > 0 {
				break
			}
		}
		d := time.Since(start)
		b.StopTimer()
		cancel()
		total += d
		worst = max(worst, d)
		n.docker.Docker(b, "network", "rm", name)
		testutil.Eventually(b, 5*time.Second, func() error { return n.unregistered(name, subnet) })
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/create-to-etcd")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst")
}

// reports returns the "writes since last report" lines logged so far.
func (n *node) reports() []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(n.Logs(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "writes since last report" {
			out = append(out, m)
		}
	}
	return out
}

// The real binary programs a peer's network from etcd, and once converged a
// resync reconciles every key without a single netlink write.
func TestDaemonProgramsPeerAndResyncWritesNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-3", netip.MustParseAddr("198.51.100.14"))
	n.start("INTERVAL=1")
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := n.get(keys.Host("node-3")); !ok {
			return fmt.Errorf("daemon not up yet")
		}
		return nil
	})

	peer := registry.Network{Host: "node-9", Network: "web", Subnet: netip.MustParsePrefix("198.19.9.0/24"),
		PublicIP: netip.MustParseAddr("198.51.100.99"), VtepMAC: net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, 0x63}, VNI: 1}
	rec, err := registry.EncodeNetwork(peer)
	if err != nil {
		t.Fatal(err)
	}
	res, err := flannel.Encode(flannel.NewReservation("node-9", "web"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.etcd.Put(ctx, keys.Network("node-9", "web"), string(rec)); err != nil {
		t.Fatal(err)
	}
	if _, err := n.etcd.Put(ctx, keys.Subnet(peer.Subnet), string(res)); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"route": {"198.19.9.0/24 via 198.19.9.0 dev flannel.1 proto 76 onlink"},
		"neigh": {"198.19.9.0 lladdr 02:42:c6:33:64:63 PERMANENT"},
		"fdb":   {"02:42:c6:33:64:63 dst 198.51.100.99 self permanent"},
	}
	cmds := map[string][]string{
		"route": {"ip", "route", "show", "198.19.9.0/24"},
		"neigh": {"ip", "neigh", "show", "dev", "flannel.1"},
		"fdb":   {"bridge", "fdb", "show", "dev", "flannel.1"},
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		for what, args := range cmds {
			out, err := n.ns.Try(args[0], args[1:]...)
			if err != nil {
				return err
			}
			for _, w := range want[what] {
				if !strings.Contains(out, w) {
					return fmt.Errorf("%s: want %q in:\n%s", what, w, out)
				}
			}
		}
		return nil
	})
	// Wait for two full report periods after convergence: the later one
	// covers a whole resync of a converged host.
	converged := len(n.reports())
	testutil.Eventually(t, 10*time.Second, func() error {
		if r := n.reports(); len(r) < converged+2 {
			return fmt.Errorf("%d reports so far", len(r))
		}
		return nil
	})
	last := n.reports()[converged+1]
	if last["netlink"] != float64(0) || last["iptables"] != float64(0) {
		t.Fatalf("a resync over a converged host wrote: %v", last)
	}
	if rc, _ := last["reconciles"].(float64); rc == 0 {
		t.Fatalf("no reconcile ran in a resync period (the zero writes prove nothing): %v", last)
	}
	// The first programming was logged with its trigger.
	if logs := n.Logs(); !strings.Contains(logs, `"trigger":"etcd:put /flannel/network/subnets/node-9/web"`) {
		t.Fatalf("no log line with the etcd trigger:\n%s", logs)
	}
}

// One-shot mode (`once`, and the original's `--once`) registers and exits 0.
func TestDaemonOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-4", netip.MustParseAddr("198.51.100.15"))
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.10.0/24", "one")
	for _, mode := range []string{"once", "--once"} {
		cmd := exec.Command("nsenter", "--net="+n.ns.Path, daemonBinary(t), mode)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "ETCD_ENDPOINT=http://127.0.0.1:2379",
			"DOCKER_HOST=" + n.docker.Host(), "HOST_NAME=node-4", "LOG_FORMAT=json", "ALLOWED_SUBNETS=198.18.0.0/15"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		if !strings.Contains(string(out), "one pass done") {
			t.Fatalf("%s: no completion line:\n%s", mode, out)
		}
		if err := n.registered("one", "198.19.10.0/24"); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if mode == "once" {
			// The second run must find everything in place and change nothing in etcd.
			if strings.Contains(string(out), "register network") == false {
				t.Fatalf("first pass did not log the registration:\n%s", out)
			}
		} else if strings.Contains(string(out), "register network") {
			t.Fatalf("second pass registered again:\n%s", out)
		}
	}
}

// TestDaemonForwardingFollowsConflicts: a registered network whose subnet
// becomes a conflict (another host's flanneld lease inside it) is withdrawn
// and loses its forwarding rules; when the conflict clears it is registered
// again and gets them back. INTERVAL is an hour: no resync helps.
func TestDaemonForwardingFollowsConflicts(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-5", netip.MustParseAddr("198.51.100.16"))
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.6.0/24", "app1")
	n.start("INTERVAL=3600")
	testutil.Eventually(t, 20*time.Second, func() error { return n.registered("app1", "198.19.6.0/24") })
	rules := func(want bool) func() error {
		return func() error {
			out, err := n.ns.Try("iptables", "-w", "-S", "FLANNEL-REGISTRAR-FWD")
			if err != nil {
				return err
			}
			if has := strings.Contains(out, "198.19.6.0/24"); has != want {
				return fmt.Errorf("forwarding rules for 198.19.6.0/24 present %v, want %v:\n%s", has, want, out)
			}
			return nil
		}
	}
	testutil.Eventually(t, 10*time.Second, rules(true))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := n.etcd.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.99"), 1, net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, 0x63}))
	key := keys.Subnet(netip.MustParsePrefix("198.19.6.128/25"))
	if _, err := n.etcd.Put(ctx, key, string(theirs), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return n.unregistered("app1", "198.19.6.0/24") })
	testutil.Eventually(t, 5*time.Second, rules(false))

	if _, err := n.etcd.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return n.registered("app1", "198.19.6.0/24") })
	testutil.Eventually(t, 5*time.Second, rules(true))
}
