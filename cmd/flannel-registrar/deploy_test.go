package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// The real binary's prepare in a namespace: before/after values, and a
// second run that changes nothing.
func TestPrepareCommand(t *testing.T) {
	ns := testutil.NewNetns(t, "frprep")
	if err := ns.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, PeerName: "fl-peer"}); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv4.conf.all.rp_filter=1", "net/ipv4/conf/flannel.1/rp_filter=1")
	prepare := func() string {
		cmd := exec.Command("nsenter", "--net="+ns.Path, daemonBinary(t), "prepare")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOST_NAME=prep"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("prepare: %v: %s", err, out)
		}
		return string(out)
	}
	first := prepare()
	for _, want := range []string{
		"prepare: net.ipv4.ip_forward 0 -> 1",
		"prepare: net.ipv4.conf.flannel.1.rp_filter 1 -> 2",
		"prepare: 2 changed",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first run lacks %q:\n%s", want, first)
		}
	}
	if got := ns.Run(t, "sysctl", "-n", "net.ipv4.ip_forward", "net/ipv4/conf/flannel.1/rp_filter", "net.ipv4.conf.all.rp_filter"); strings.Fields(got)[0] != "1" || strings.Fields(got)[1] != "2" || strings.Fields(got)[2] != "1" {
		t.Errorf("after prepare: ip_forward, flannel.1 rp_filter, all rp_filter = %q, want 1 2 1", got)
	}
	second := prepare()
	if !strings.Contains(second, "prepare: nothing changed") || strings.Contains(second, "->") {
		t.Errorf("second run:\n%s", second)
	}
}

func (n *node) checkHealth() (string, error) {
	cmd := exec.Command(daemonBinary(n.t), "health")
	cmd.Env = []string{"HEALTH_FILE=" + n.healthFile(), "HOST_NAME=" + n.host}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Started as root with the default RUN_AS_ROOT=false, the daemon runs as
// uid 65534 in the Docker socket's group with NET_ADMIN and NET_RAW only, still
// registers and routes; health turns healthy; SIGTERM ends it at once with
// exit 0 and leaves its registrations in place.
func TestDaemonUnprivilegedHealthAndStop(t *testing.T) {
	srv := etcdtest.Start(t)
	n := newNode(t, srv, "node-u", netip.MustParseAddr("198.51.100.21"))
	n.docker.Docker(t, "network", "create", "--subnet", "198.19.21.0/24", "u1")
	started := time.Now()
	n.start()
	testutil.Eventually(t, 20*time.Second, func() error { return n.registered("u1", "198.19.21.0/24") })
	t.Logf("registered %s after start", time.Since(started).Round(time.Millisecond))
	testutil.Eventually(t, 20*time.Second, func() error {
		out, err := n.checkHealth()
		if err != nil {
			return fmt.Errorf("health: %w: %s", err, out)
		}
		return nil
	})
	t.Logf("healthy %s after start", time.Since(started).Round(time.Millisecond))

	pid := n.cmd.Process.Pid
	st, err := testutil.ProcStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st["Name"] != "flannel-registr" { // comm is 15 characters
		t.Fatalf("pid %d is %q, not the daemon", pid, st["Name"])
	}
	if uid := strings.Fields(st["Uid"]); len(uid) == 0 || uid[0] == "0" || uid[1] == "0" {
		t.Errorf("Uid %q: want non-zero", st["Uid"])
	}
	if st["CapEff"] != "0000000000003000" || st["CapAmb"] != "0000000000003000" || st["CapBnd"] != "0000000000003000" {
		t.Errorf("CapEff %s CapAmb %s CapBnd %s: want NET_ADMIN and NET_RAW only (0000000000003000)", st["CapEff"], st["CapAmb"], st["CapBnd"])
	}
	sock, err := os.Stat(strings.TrimPrefix(n.docker.Host(), "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	gid := strconv.Itoa(int(sock.Sys().(*syscall.Stat_t).Gid))
	if !strings.Contains(" "+st["Groups"]+" ", " "+gid+" ") {
		t.Errorf("Groups %q: want the socket's group %s", st["Groups"], gid)
	}
	if !strings.Contains(n.Logs(), `"msg":"privileges dropped"`) {
		t.Errorf("no privileges dropped line in the log")
	}

	stopAt := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		t.Fatal("daemon still running 5s after SIGTERM")
	}
	took := time.Since(stopAt)
	code := n.cmd.ProcessState.ExitCode()
	n.cmd = nil
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\n%s", code, n.Logs())
	}
	t.Logf("SIGTERM to exit: %s", took.Round(time.Millisecond))
	if err := n.registered("u1", "198.19.21.0/24"); err != nil {
		t.Errorf("registration after stop: %v (it must stay on its lease)", err)
	}
	out, err := n.checkHealth()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "stopped") {
		t.Errorf("health after stop: %v %q, want exit 1 saying stopped", err, out)
	}
}
