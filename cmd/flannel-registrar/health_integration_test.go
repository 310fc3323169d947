package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/status"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// httpGet fetches a URL from inside the node's namespace (the endpoints
// listen on the namespace's loopback).
func (n *node) httpGet(path string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.ns.Do(func() (err error) {
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get("http://127.0.0.1:9653" + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// command runs the binary with a subcommand in the node's namespace and
// returns stdout, stderr and the exit status.
func (n *node) command(args ...string) (string, string, int) {
	n.t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path, daemonBinary(n.t)}, args...)...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"ETCD_ENDPOINT=http://127.0.0.1:2379",
		"DOCKER_HOST=" + n.docker.Host(),
		"HOST_NAME=" + n.host,
		"LOG_FORMAT=json",
		"ALLOWED_SUBNETS=198.18.0.0/15",
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func (n *node) put(key, value string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.etcd.Put(ctx, key, value); err != nil {
		n.t.Fatal(err)
	}
}

// ownLease publishes the vxlan lease flanneld would write for the node.
func (n *node) ownLease(subnet string) {
	n.t.Helper()
	v, err := flannel.Encode(flannel.NewVXLAN(n.local, 1, n.mac))
	if err != nil {
		n.t.Fatal(err)
	}
	n.put(keys.Subnet(netip.MustParsePrefix(subnet)), string(v))
}

func wantStatus(n *node, path string, code int) func() error {
	return func() error {
		got, body, err := n.httpGet(path)
		if err != nil {
			return err
		}
		if got != code {
			return fmt.Errorf("%s = %d %q, want %d", path, got, body, code)
		}
		return nil
	}
}

// /readyz is 200 once listed, 503 while etcd is down, 200 again after;
// /healthz stays 200; /metrics has the prefixed series.
func TestHealthEndpoints(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-h1", netip.MustParseAddr("198.51.100.21"))
	n.ownLease("198.18.21.0/24")
	n.start()
	testutil.Eventually(t, 20*time.Second, wantStatus(n, "/readyz", 200))
	testutil.Eventually(t, 5*time.Second, wantStatus(n, "/healthz", 200))
	_, body, err := n.httpGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`flannel_registrar_ready 1`, `flannel_registrar_connected{dependency="etcd"} 1`,
		`flannel_registrar_reconciles_total{controller="subnets"}`, `flannel_registrar_kernel_writes_total{verb="route_replace"}`,
		`flannel_registrar_vxlan_device_present 1`, `flannel_registrar_go_goroutines`} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %q", s)
		}
	}
	// A peer whose VTEP does not answer: unreachable in the metrics and in
	// this host's status entry, which status reads.
	peerLease, err := flannel.Encode(flannel.NewVXLAN(netip.MustParseAddr("198.51.100.29"), 1, net.HardwareAddr{2, 0x42, 0xc6, 0x33, 0x64, 0x1d}))
	if err != nil {
		t.Fatal(err)
	}
	n.put(keys.Subnet(netip.MustParsePrefix("198.18.29.0/24")), string(peerLease))
	testutil.Eventually(t, 20*time.Second, func() error {
		_, body, err := n.httpGet("/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `flannel_registrar_peer_reachable{peer="",public_ip="198.51.100.29"} 0`) {
			return fmt.Errorf("peer not reported unreachable yet")
		}
		v, ok := n.get(keys.Status("node-h1"))
		if !ok || !strings.Contains(string(v), `{"PublicIP":"198.51.100.29","Reachable":false}`) {
			return fmt.Errorf("status entry = %s", v)
		}
		return nil
	})
	if c := strings.Count(n.Logs(), `"msg":"peer unreachable"`); c != 1 {
		t.Errorf("%d 'peer unreachable' lines, want 1", c)
	}
	srv.Stop()
	testutil.Eventually(t, 15*time.Second, wantStatus(n, "/readyz", 503))
	if _, body, _ := n.httpGet("/readyz"); !strings.Contains(body, "etcd unreachable") {
		t.Errorf("/readyz while etcd is down does not say why: %q", body)
	}
	testutil.Eventually(t, 5*time.Second, wantStatus(n, "/healthz", 200))
	srv.Restart(t)
	testutil.Eventually(t, 15*time.Second, wantStatus(n, "/readyz", 200))
}

// A 127.0.0.1 lease is quarantined and removed; the original tool's keys of
// this host are moved, another host's are left and reported by status and
// doctor; status lists hosts and networks.
func TestLeftoversStatusAndDoctor(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-h2", netip.MustParseAddr("198.51.100.22"))
	n.ownLease("198.18.22.0/24")
	const loop = `{"PublicIP":"127.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`
	n.put(keys.Records()+"node-h2/old", "198.18.77.0/24")
	n.put(keys.Records()+"gone-host/old", "198.18.78.0/24")
	n.put(keys.Records()+"_host_status/gone-host", "up")
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.22.0/24", "app22")
	peer := registry.Network{Host: "node-h9", Network: "web", Subnet: netip.MustParsePrefix("198.19.99.0/24"),
		PublicIP: netip.MustParseAddr("198.51.100.99"), VtepMAC: net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, 0x63}, VNI: 1}
	rec, err := registry.EncodeNetwork(peer)
	if err != nil {
		t.Fatal(err)
	}
	n.put(keys.Network("node-h9", "web"), string(rec))
	n.start()
	testutil.Eventually(t, 20*time.Second, func() error { return n.registered("app22", "198.19.22.0/24") })
	// Written after the start: found by the watcher, not the start scan.
	n.put(keys.Subnet(netip.MustParsePrefix("198.18.50.0/24")), loop)
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := n.get(keys.Subnet(netip.MustParsePrefix("198.18.50.0/24"))); ok {
			return fmt.Errorf("127.0.0.1 lease still there")
		}
		if v, ok := n.get(keys.QuarantineKey(keys.Subnet(netip.MustParsePrefix("198.18.50.0/24")))); !ok || string(v) != loop {
			return fmt.Errorf("no quarantined copy (%q)", v)
		}
		if _, ok := n.get(keys.Records() + "node-h2/old"); ok {
			return fmt.Errorf("this host's leftover still there")
		}
		return nil
	})
	if _, ok := n.get(keys.Records() + "gone-host/old"); !ok {
		t.Fatal("another host's leftover was removed")
	}
	if c := strings.Count(n.Logs(), "found keys the original flannel-registrar"); c != 1 {
		t.Fatalf("%d summary lines of leftovers, want 1:\n%s", c, n.Logs())
	}
	if strings.Contains(n.Logs(), `"msg":"skipped invalid etcd item","key":"/flannel/network/subnets/gone-host/old"`) {
		t.Fatal("a leftover was warned about as an invalid item")
	}

	out, errOut, code := n.command("status", "--json")
	if code != 0 {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	hosts := map[string]status.Host{}
	for _, h := range r.Hosts {
		hosts[h.Name] = h
	}
	if h := hosts["node-h2"]; !h.Alive || h.Reach != "self" || len(h.Networks) != 1 {
		t.Errorf("this host in status: %+v", h)
	}
	if h, ok := hosts["node-h9"]; !ok || h.Alive {
		t.Errorf("peer known only from its record should be stale: %+v", h)
	}
	nets := map[string]string{}
	for _, nw := range r.Networks {
		nets[nw.Host+"/"+nw.Name] = nw.State
	}
	if nets["node-h2/app22"] != status.StateLocal || nets["node-h9/web"] != status.StateRouted {
		t.Errorf("network states = %v", nets)
	}
	if len(r.Quarantined) != 2 || len(r.Leftovers) != 2 {
		t.Errorf("quarantined %+v, leftovers %+v; want 2 and 2", r.Quarantined, r.Leftovers)
	}
	table, _, code := n.command("status")
	if code != 0 || !strings.Contains(table, "node-h9") || !strings.Contains(table, "198.19.99.0/24") {
		t.Errorf("status table (exit %d):\n%s", code, table)
	}

	// A fresh namespace does not forward: doctor fails and names ip_forward.
	n.ns.Run(t, "sysctl", "-w", "net.ipv4.ip_forward=0")
	out, _, code = n.command("doctor")
	if code != 1 || !strings.Contains(out, "fail  ip_forward") {
		t.Fatalf("doctor with ip_forward=0 exited %d:\n%s", code, out)
	}
	n.ns.Run(t, "sysctl", "-w", "net.ipv4.ip_forward=1")
	out, errOut, code = n.command("doctor")
	if code != 0 {
		t.Fatalf("doctor on a healthy host exited %d:\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "warn  original_tool_keys") {
		t.Errorf("doctor does not report the other host's leftovers:\n%s", out)
	}
}

// RECOVERY=flannel restarts the flannel container once when the VXLAN
// device is gone for the grace period, and not again within the cooldown.
func TestRecoveryRestartsFlannelContainer(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-h3", netip.MustParseAddr("198.51.100.23"))
	n.ownLease("198.18.23.0/24")
	n.docker.ImportBusybox(t)
	n.docker.Docker(t, "run", "-d", "--name", "flannel", "--network", "none", "frtest/busybox", "sleep", "3600")
	started := func() string {
		return strings.TrimSpace(n.docker.Docker(t, "inspect", "-f", "{{.State.StartedAt}}", "flannel"))
	}
	first := started()
	n.start("RECOVERY=flannel", "RECOVERY_GRACE=1s", "RECOVERY_COOLDOWN=1h")
	testutil.Eventually(t, 20*time.Second, wantStatus(n, "/readyz", 200))

	del := func() {
		l, err := n.ns.Handle.LinkByName("flannel.1")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ns.Handle.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	}
	del()
	testutil.Eventually(t, 15*time.Second, func() error {
		if s := started(); s == first {
			return fmt.Errorf("flannel container not restarted (started %s)", s)
		}
		return nil
	})
	second := started()
	// The test plays flanneld: the restarted one recreates the device.
	ul, err := n.ns.Handle.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	netlinkxtest.VXLAN(t, n.ns, "flannel.1", ul, n.local, n.mac)
	testutil.Eventually(t, 10*time.Second, wantStatus(n, "/readyz", 200))
	del()
	testutil.Eventually(t, 15*time.Second, func() error {
		if !strings.Contains(n.Logs(), "not restarting, the last restart is within RECOVERY_COOLDOWN") {
			return fmt.Errorf("no cooldown decision logged yet")
		}
		return nil
	})
	if s := started(); s != second {
		t.Fatalf("restarted again within the cooldown: %s -> %s", second, s)
	}
	if c := strings.Count(n.Logs(), "restarting the flannel container"); c != 1 {
		t.Fatalf("%d restarts logged, want 1", c)
	}
	_, body, err := n.httpGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`flannel_registrar_recovery_actions_total{action="restart"} 1`,
		`flannel_registrar_recovery_actions_total{action="skipped_cooldown"} 1`} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %q", s)
		}
	}
}
