package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/status"
)

// Operate-and-heal scenarios (issue 9): the health endpoints, status,
// doctor, peer reachability and the original tool's 127.0.0.1 leases, on
// the real lab.

var labKeys = registry.Keys{FlannelPrefix: lab.FlannelPrefix, ConfigPrefix: "/flannel/network/subnets"}

// inHost runs fn on a thread inside the host's network namespace.
func inHost(h *lab.Host, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.GetFromName(h.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("restore netns: %v", err))
		}
	}()
	return fn()
}

// httpGet fetches path from the host's registrar endpoints (METRICS_ADDR's
// default, the host namespace's loopback).
func httpGet(h *lab.Host, path string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inHost(h, func() (err error) {
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://127.0.0.1:9653" + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func httpStatus(h *lab.Host, path string, want int) func() error {
	return func() error {
		code, body, err := httpGet(h, path)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("%s on %s = %d %q, want %d", path, h.Name, code, strings.TrimSpace(body), want)
		}
		return nil
	}
}

// registrarCmd runs the registrar binary with a subcommand on the host, as
// an operator would (same etcd and Docker settings as the daemon).
func registrarCmd(l *lab.Lab, h *lab.Host, args ...string) (string, int, error) {
	argv := append([]string{"nsenter", "--net=" + lab.NetnsPath(h.Netns), "--", l.RegistrarPath()}, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"ETCD_ENDPOINT=" + theLab.EtcdEndpointList(), "HOST_NAME=" + h.Name, "DOCKER_HOST=" + h.DockerHost(),
		"ALLOWED_SUBNETS=" + lab.AllowedSubnets, "LOG_FORMAT=json",
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String() + stderr.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return "", -1, err
	}
	return stdout.String(), 0, nil
}

// /readyz answers 200 on a running host, not 200 while etcd is down, and
// 200 again once it is back.
func TestReadyzFollowsEtcd(t *testing.T) {
	l := needLab(t)
	defer ensureRunning(t, l)
	ctx := context.Background()
	h := l.Host(1)
	eventually(t, 20*time.Second, "/readyz 200", httpStatus(h, "/readyz", 200))
	eventually(t, 5*time.Second, "/healthz 200", httpStatus(h, "/healthz", 200))
	if err := l.StopEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	eventually(t, 15*time.Second, "/readyz 503 while etcd is down", httpStatus(h, "/readyz", 503))
	t.Logf("/readyz not ready %s after etcd stopped", time.Since(stopped).Round(10*time.Millisecond))
	if _, body, _ := httpGet(h, "/readyz"); !strings.Contains(body, "etcd unreachable") {
		t.Errorf("/readyz does not say etcd is unreachable: %q", body)
	}
	eventually(t, 5*time.Second, "/healthz 200 while etcd is down", httpStatus(h, "/healthz", 200))
	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	eventually(t, 30*time.Second, "/readyz 200 after etcd is back", httpStatus(h, "/readyz", 200))
	t.Logf("/readyz ready %s after etcd started", time.Since(started).Round(10*time.Millisecond))

	// Paused (SIGSTOP): connections stay open and requests hang.
	if err := l.PauseEtcd(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			_ = l.ResumeEtcd()
		}
	}()
	eventually(t, 15*time.Second, "/readyz 503 while etcd is paused", httpStatus(h, "/readyz", 503))
	t.Logf("/readyz not ready %s after etcd paused", time.Since(paused).Round(10*time.Millisecond))
	eventually(t, 5*time.Second, "/healthz 200 while etcd is paused", httpStatus(h, "/healthz", 200))
	if err := l.ResumeEtcd(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	eventually(t, 30*time.Second, "/readyz 200 after etcd resumed", httpStatus(h, "/readyz", 200))
}

// status on one host lists every host (alive, reachable from here) and every
// base network.
func TestStatusListsCluster(t *testing.T) {
	l := needLab(t)
	var r status.Report
	eventually(t, 30*time.Second, "status --json on h1 lists the cluster", func() error {
		out, code, err := registrarCmd(l, l.Host(1), "status", "--json")
		if err != nil || code != 0 {
			return fmt.Errorf("status exited %d: %w\n%s", code, err, out)
		}
		r = status.Report{}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return fmt.Errorf("status --json: %w\n%s", err, out)
		}
		hosts := map[string]status.Host{}
		for _, h := range r.Hosts {
			hosts[h.Name] = h
		}
		for _, h := range l.Hosts {
			got, ok := hosts[h.Name]
			want := "reachable"
			if h.Index == 1 {
				want = "self"
			}
			if !ok || !got.Alive || got.PublicIP != h.IP || got.Reach != want {
				return fmt.Errorf("host %s: %+v, want alive, %s, %s", h.Name, got, h.IP, want)
			}
		}
		nets := map[string]status.Network{}
		for _, n := range r.Networks {
			nets[n.Host+"/"+n.Name] = n
		}
		for _, b := range baseNets() {
			n, ok := nets[b.Host.Name+"/"+b.Name]
			want := status.StateRouted
			if b.Host.Index == 1 {
				want = status.StateLocal
			}
			if !ok || n.Subnet != b.Subnet || n.State != want {
				return fmt.Errorf("network %s/%s: %+v, want %s %s", b.Host.Name, b.Name, n, b.Subnet, want)
			}
		}
		if !r.Local.InSync {
			return fmt.Errorf("h1 not in sync: %v", r.Local.Diffs)
		}
		return nil
	})
	table, code, err := registrarCmd(l, l.Host(1), "status")
	if err != nil || code != 0 {
		t.Fatalf("status exited %d: %v\n%s", code, err, table)
	}
	for line := range strings.SplitSeq(table, "\n") {
		if n := len([]rune(line)); n > status.Width {
			t.Errorf("status line of %d columns: %q", n, line)
		}
	}
	t.Logf("status on h1:\n%s", table)
}

// doctor passes on a healthy host and fails naming ip_forward when it is off.
func TestDoctor(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	h := l.Host(2)
	out, code, err := registrarCmd(l, h, "doctor")
	if err != nil || code != 0 {
		t.Fatalf("doctor on a healthy host exited %d (%v):\n%s", code, err, out)
	}
	t.Logf("doctor on h2:\n%s", out)
	if _, err := h.Run(ctx, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := h.Run(ctx, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			t.Errorf("restore ip_forward: %v", err)
		}
	}()
	out, code, err = registrarCmd(l, h, "doctor")
	if err != nil || code != 1 {
		t.Fatalf("doctor with ip_forward=0 exited %d (%v), want 1:\n%s", code, err, out)
	}
	if !strings.Contains(out, "fail  ip_forward") {
		t.Fatalf("doctor does not name ip_forward:\n%s", out)
	}
}

// A peer whose VXLAN traffic is dropped is reported unreachable within 15 s
// and reachable again within 15 s after.
func TestPeerUnreachable(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	from, peer := l.Host(1), l.Host(3)
	metric := fmt.Sprintf(`flannel_registrar_peer_reachable{peer=%q,public_ip=%q}`, peer.Name, peer.IP)
	reachable := func(want string) func() error {
		return func() error {
			_, body, err := httpGet(from, "/metrics")
			if err != nil {
				return err
			}
			if !strings.Contains(body, metric+" "+want) {
				return fmt.Errorf("%s is not %s", metric, want)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "peer reachable before the fault", reachable("1"))
	offset := logSize(from)
	rule := []string{"iptables", "-w", "-I", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"}
	if _, err := peer.Run(ctx, rule...); err != nil {
		t.Fatal(err)
	}
	dropped := true
	defer func() {
		if dropped {
			rule[2] = "-D"
			if _, err := peer.Run(ctx, rule...); err != nil {
				t.Errorf("remove the drop rule: %v", err)
			}
		}
	}()
	t0 := time.Now()
	eventually(t, 15*time.Second, "peer reported unreachable", reachable("0"))
	t.Logf("%s unreachable from %s reported %s after its UDP 8472 was dropped", peer.Name, from.Name, time.Since(t0).Round(10*time.Millisecond))
	if log := registrarLogSince(from, offset); strings.Count(log, `"msg":"peer unreachable"`) != 1 {
		t.Errorf("want one 'peer unreachable' line, log:\n%s", log)
	}
	rule[2] = "-D"
	if _, err := peer.Run(ctx, rule...); err != nil {
		t.Fatal(err)
	}
	dropped = false
	t1 := time.Now()
	eventually(t, 15*time.Second, "peer reported reachable again", reachable("1"))
	t.Logf("%s reachable again %s after the rule was removed", peer.Name, time.Since(t1).Round(10*time.Millisecond))
	if log := registrarLogSince(from, offset); !strings.Contains(log, `"msg":"peer reachable again"`) {
		t.Errorf("no 'peer reachable again' line, log:\n%s", log)
	}
}

// A vxlan lease with PublicIP 127.0.0.1 (the original tool wrote them) is
// copied under _quarantine/ and removed.
func TestLoopbackLeaseQuarantined(t *testing.T) {
	l := needLab(t)
	const key = lab.FlannelPrefix + "/subnets/198.18.250.0-24"
	const value = `{"PublicIP":"127.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`
	if err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Put(ctx, key, value)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.Delete(ctx, labKeys.QuarantineKey(key))
			return err
		})
	})
	t0 := time.Now()
	eventually(t, 15*time.Second, "127.0.0.1 lease removed", func() error { return absentInEtcd(l, key) })
	t.Logf("127.0.0.1 lease removed %s after it was written", time.Since(t0).Round(time.Millisecond))
	if err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		r, err := cli.Get(ctx, labKeys.QuarantineKey(key))
		if err != nil {
			return err
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != value {
			return fmt.Errorf("quarantined copy = %v", r.Kvs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// With RECOVERY=flannel and flanneld in a container, deleting flannel.1
// leads to one restart of that container and traffic back both ways; a
// second fault inside the cooldown leads to no restart.
func TestRecoveryRestartsFlanneldContainer(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	h := l.Host(3)
	if err := h.FlanneldToContainer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.RestartRegistrar(ctx); err != nil {
			t.Errorf("restart the registrar with the lab's settings: %v", err)
		}
		if err := h.FlanneldToProcess(ctx); err != nil {
			t.Errorf("flanneld back to a process: %v", err)
		}
		ensureRunning(t, l)
	})
	if err := h.RestartRegistrar(ctx, "RECOVERY=flannel", "RECOVERY_GRACE=2s", "RECOVERY_COOLDOWN=900"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "h3 ready with flanneld in a container", httpStatus(h, "/readyz", 200))
	eventually(t, 30*time.Second, "traffic both ways before the fault", func() error {
		return allPairs(ctx, []*testNet{base[1], base[3]})
	})
	startedAt := func() string {
		s, err := h.Docker(ctx, "inspect", "-f", "{{.State.StartedAt}}", lab.FlannelContainer)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := startedAt()
	offset := logSize(h)
	if _, err := h.Run(ctx, "ip", "link", "del", lab.VXLANDevice); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	eventually(t, 60*time.Second, "traffic both ways after recovery", func() error {
		return allPairs(ctx, []*testNet{base[1], base[3]})
	})
	t.Logf("flannel.1 deleted -> traffic back both ways: %s (RECOVERY_GRACE=2s)", time.Since(deleted).Round(10*time.Millisecond))
	second := startedAt()
	if second == first {
		t.Fatal("traffic came back without a restart of the flannel container")
	}
	if n := strings.Count(registrarLogSince(h, offset), "restarting the flannel container"); n != 1 {
		t.Fatalf("%d restarts logged, want 1:\n%s", n, registrarLogSince(h, offset))
	}

	// A second fault inside the cooldown: no restart.
	if _, err := h.Run(ctx, "ip", "link", "del", lab.VXLANDevice); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "cooldown decision logged", func() error {
		if !strings.Contains(registrarLogSince(h, offset), "not restarting, the last restart is within RECOVERY_COOLDOWN") {
			return errors.New("no cooldown decision yet")
		}
		return nil
	})
	if s := startedAt(); s != second {
		t.Fatalf("flannel container restarted again inside the cooldown (%s -> %s)", second, s)
	}
	// Heal by hand, as an operator would, so the next scenario finds a healthy lab.
	if _, err := h.Docker(ctx, "restart", lab.FlannelContainer); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "traffic both ways after the manual restart", func() error {
		return allPairs(ctx, []*testNet{base[1], base[3]})
	})
}
