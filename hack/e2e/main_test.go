// Package e2e is the end-to-end tier: scenarios on a real multi-host lab
// (hack/lab: real dockerd, flanneld and etcd per simulated host, and
// flannel-registrar built from this tree), each asserting with real traffic
// between containers on different hosts.
//
// It runs only with FR_E2E=1 or in CI (CI=true), as root; otherwise every
// test skips. One lab is shared by all scenarios (TestMain), in the order
// of scenarios_test.go; each scenario leaves the lab healthy for the next.
// FR_E2E_KEEP=1 leaves the lab up afterwards for inspection.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// stateDir is the e2e lab's; its namespaces are frlab-e2e-underlay, frlab-e2e-h1, ...
const stateDir = "/run/frlab-e2e"

var (
	enabled  bool
	theLab   *lab.Lab
	setupErr error
	// base[i] is host i's network with one container, made by TestMain.
	base = map[int]*testNet{}
)

// testNet is a custom network with one test container on it.
type testNet struct {
	Host      *lab.Host
	Name      string
	Subnet    string
	Container string
	IP        string
}

func TestMain(m *testing.M) {
	enabled = os.Getenv("FR_E2E") == "1" || testutil.InCI()
	if !enabled || os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips (or fails in CI) in needLab
	}
	os.Exit(runWithLab(m))
}

func runWithLab(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := lab.Down(ctx, stateDir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: removing an old lab: %v\n", err)
	}
	start := time.Now()
	theLab, setupErr = lab.Up(ctx, lab.Options{
		Hosts:       3,
		EtcdMembers: 3,
		StateDir:    stateDir,
		Registrar:   true,
		Interval:    10,
		Progress:    func(s string) { fmt.Printf("e2e: [%5.1fs] %s\n", time.Since(start).Seconds(), s) },
	})
	if setupErr == nil {
		setupErr = createBase(ctx)
	}
	fmt.Printf("e2e: lab ready in %s (err: %v)\n", time.Since(start).Round(100*time.Millisecond), setupErr)
	code := m.Run()
	if os.Getenv("FR_E2E_KEEP") == "1" {
		fmt.Printf("e2e: lab kept in %s; remove with: go run ./hack/labctl down --state %s\n", stateDir, stateDir)
		return code
	}
	downCtx, downCancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer downCancel()
	t := time.Now()
	if err := lab.Down(downCtx, stateDir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: lab down: %v\n", err)
		return 1
	}
	fmt.Printf("e2e: lab down in %s\n", time.Since(t).Round(100*time.Millisecond))
	return code
}

// createBase makes net<i> (198.19.<i>.0/24) with container c<i> on host i.
func createBase(ctx context.Context) error {
	for _, h := range theLab.Hosts {
		n, err := newNet(ctx, h, fmt.Sprintf("net%d", h.Index), fmt.Sprintf("198.19.%d.0/24", h.Index))
		if err != nil {
			return err
		}
		base[h.Index] = n
	}
	return nil
}

func newNet(ctx context.Context, h *lab.Host, name, subnet string) (*testNet, error) {
	if err := h.CreateNetwork(ctx, name, subnet); err != nil {
		return nil, err
	}
	c := "c-" + name
	ip, err := h.RunContainer(ctx, c, name)
	if err != nil {
		return nil, err
	}
	return &testNet{Host: h, Name: name, Subnet: subnet, Container: c, IP: ip}, nil
}

// cleanupNet removes n when the test ends (also on failure).
func cleanupNet(t *testing.T, n *testNet) {
	t.Cleanup(func() {
		if err := n.remove(context.Background()); err != nil {
			t.Errorf("remove network %s: %v", n.Name, err)
		}
	})
}

func (n *testNet) remove(ctx context.Context) error {
	if err := n.Host.RemoveContainer(ctx, n.Container); err != nil {
		return err
	}
	return n.Host.RemoveNetwork(ctx, n.Name)
}

// needLab gates a scenario: skipped unless enabled, failed in CI without
// root, failed when the shared lab could not be set up. It logs how long
// the scenario took and, if it failed, the tail of every registrar log.
func needLab(t *testing.T) *lab.Lab {
	t.Helper()
	if !enabled {
		t.Skip("end-to-end tier: set FR_E2E=1 and run as root (make test-e2e)")
	}
	testutil.RequireRoot(t)
	if setupErr != nil {
		t.Fatalf("lab setup failed: %v", setupErr)
	}
	start := time.Now()
	t.Cleanup(func() {
		t.Logf("scenario %s took %s", t.Name(), time.Since(start).Round(100*time.Millisecond))
		if t.Failed() {
			dumpLogs(t)
		}
	})
	return theLab
}

func dumpLogs(t *testing.T) {
	for _, h := range theLab.Hosts {
		out, _ := tail(h.Log(lab.Registrar), 25)
		t.Logf("---- %s registrar log (tail) ----\n%s", h.Name, out)
		routes, _ := h.Run(context.Background(), "ip", "route")
		t.Logf("---- %s ip route ----\n%s", h.Name, routes)
	}
}

func tail(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := splitLines(string(b))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return joinLines(lines), nil
}
