package e2e

import (
	"context"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
)

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
func joinLines(l []string) string  { return strings.Join(l, "\n") }

// eventually retries check every 250 ms until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := poll.Until(context.Background(), timeout, 250*time.Millisecond, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// reach checks that from's container pings to's container and opens a TCP
// connection to it, and that the receiver saw from's container address as
// the source (no NAT on the way).
func reach(ctx context.Context, from, to *testNet) error {
	if err := from.Host.Ping(ctx, from.Container, to.IP); err != nil {
		return fmt.Errorf("ping %s(%s) -> %s(%s): %w", from.Container, from.Host.Name, to.Container, to.Host.Name, err)
	}
	peers, err := from.Host.TCPPeers(ctx, from.Container, to.IP)
	if err != nil {
		return fmt.Errorf("tcp %s -> %s: %w", from.Container, to.Container, err)
	}
	if !slices.Contains(peers, from.IP) {
		return fmt.Errorf("tcp %s -> %s: receiver saw source %v, want %s", from.Container, to.Container, peers, from.IP)
	}
	return nil
}

// allPairs checks reach between every two of nets on different hosts.
func allPairs(ctx context.Context, nets []*testNet) error {
	for _, a := range nets {
		for _, b := range nets {
			if a.Host == b.Host {
				continue
			}
			if err := reach(ctx, a, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func baseNets() []*testNet { return []*testNet{base[1], base[2], base[3]} }

// routedEverywhere checks that every host but n's routes n.Subnet through
// the VXLAN device.
func routedEverywhere(l *lab.Lab, n *testNet) error {
	for _, h := range l.Hosts {
		if h == n.Host {
			continue
		}
		ok, err := h.HasRouteVia(n.Subnet, lab.VXLANDevice)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s has no route to %s via %s", h.Name, n.Subnet, lab.VXLANDevice)
		}
	}
	return nil
}

// routeMonitor watches, every 20 ms, that each remote network stays routed
// through the VXLAN device on every other host, and records every miss.
type routeMonitor struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards misses and polls
	misses []string
	polls  int
}

func watchRoutes(t *testing.T, l *lab.Lab, nets []*testNet) *routeMonitor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &routeMonitor{cancel: cancel}
	for _, h := range l.Hosts {
		w, err := h.NewRouteWatcher()
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer w.Close()
			m.watch(ctx, w, nets)
		}()
	}
	t.Cleanup(func() { m.stop() })
	return m
}

func (m *routeMonitor) watch(ctx context.Context, w *lab.RouteWatcher, nets []*testNet) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, n := range nets {
			if n.Host == w.Host {
				continue
			}
			ok, err := w.Via(n.Subnet, lab.VXLANDevice)
			m.mu.Lock()
			m.polls++
			if err != nil || !ok {
				m.misses = append(m.misses, fmt.Sprintf("%s %s: route to %s via %s missing (err %v)",
					time.Now().Format("15:04:05.000"), w.Host.Name, n.Subnet, lab.VXLANDevice, err))
			}
			m.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stop ends the watch and returns the misses and the number of checks.
func (m *routeMonitor) stop() ([]string, int) {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.misses), m.polls
}

// pinger pings continuously (every 200 ms) from a container for a while,
// in one docker exec; wait returns transmitted and received counts.
type pinger struct {
	cmd *exec.Cmd
	out strings.Builder
}

func startPinger(from *testNet, ip string, d time.Duration) (*pinger, error) {
	p := &pinger{}
	p.cmd = exec.Command("/usr/bin/docker", "-H", from.Host.DockerHost(), "exec", from.Container,
		"ping", "-q", "-i", "0.2", "-w", strconv.Itoa(int(d.Seconds())), ip)
	p.cmd.Env = append(os.Environ(), "DOCKER_API_VERSION=1.41")
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pinger: %w", err)
	}
	return p, nil
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

func (p *pinger) wait() (sent, received int, err error) {
	_ = p.cmd.Wait() // ping exits non-zero on any loss; the counts tell
	m := pingStats.FindStringSubmatch(p.out.String())
	if m == nil {
		return 0, 0, fmt.Errorf("no ping statistics in %q", p.out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// ensureRunning restarts any lab component a failed scenario left stopped,
// so the next scenario starts from a whole lab.
func ensureRunning(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if !l.EtcdRunning() {
		if err := l.StartEtcd(ctx); err != nil {
			t.Errorf("restart etcd: %v", err)
		}
	}
	for _, h := range l.Hosts {
		for _, c := range lab.Components {
			if !h.Running(c) {
				if err := h.Start(ctx, c); err != nil {
					t.Errorf("restart %s on %s: %v", c, h.Name, err)
				}
			}
		}
	}
}

// registrarLogSince returns what the host's registrar logged after offset
// bytes (use logSize to take an offset).
func registrarLogSince(h *lab.Host, offset int64) string {
	b, err := os.ReadFile(h.Log(lab.Registrar))
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

func logSize(h *lab.Host) int64 {
	st, err := os.Stat(h.Log(lab.Registrar))
	if err != nil {
		return 0
	}
	return st.Size()
}
