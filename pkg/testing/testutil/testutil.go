// Package testutil has the helpers shared by the real-kernel and real-daemon
// tests: gates that skip locally but fail in CI, throwaway network namespaces
// that are always removed, and polling with a deadline.
package testutil

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// InCI says whether the tests run in CI, where missing prerequisites are
// failures, not skips.
func InCI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips (fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root (network namespaces)")
	}
}

// RequireBinary skips (fails in CI) unless name is on PATH; it returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "needs %s on PATH", name)
	}
	return p
}

// Netns is a throwaway named network namespace.
type Netns struct {
	Name   string
	Path   string // /var/run/netns/<Name>
	NS     netns.NsHandle
	Handle *netlink.Handle // bound to the namespace
}

// NewNetns creates a namespace named prefix-<random> with lo up, and removes
// it (and with it every link inside) when the test ends, also on failure.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	RequireRoot(t)
	name := prefix + "-" + randHex(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name, Path: "/var/run/netns/" + name}
	t.Cleanup(func() {
		if n.Handle != nil {
			n.Handle.Close()
		}
		if n.NS.IsOpen() {
			n.NS.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.NS = ns
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.Handle = h
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return n
}

// Do runs fn with the calling OS thread inside the namespace. Processes that
// fn starts (os/exec) inherit the namespace.
func (n *Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.NS); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace: never let it run other goroutines.
			panic(fmt.Sprintf("restore netns: %v", err))
		}
	}()
	return fn()
}

// Run runs a command (e.g. "ip", "route") inside the namespace and returns
// its combined output; a failure fails the test.
func (n *Netns) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Try(name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return out
}

// Try is Run without failing the test.
func (n *Netns) Try(name string, args ...string) (string, error) {
	full := append([]string{"--net=" + n.Path, name}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return string(out), err
}

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("not true after %s: %v", timeout, err)
	}
}

// Poll calls fn every 10ms until it returns nil or timeout passes; it returns
// fn's last error.
func Poll(timeout time.Duration, fn func() error) error {
	return poll.Until(context.Background(), timeout, 10*time.Millisecond, fn)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ProcStatus reads the fields of /proc/<pid>/status (Uid, CapEff, …).
func ProcStatus(pid int) (map[string]string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}
