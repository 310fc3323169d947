package dockertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/mounts"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// rootState is what a daemon in a namespace must never change in the root
// namespace.
func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-t", "filter", "-S"}, {"-t", "nat", "-S"}, {"-t", "raw", "-S"}} {
		out, err := exec.Command("iptables", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			b.WriteString(f[1] + "\n") // names only: counters and flags move
		}
	}
	return b.String()
}

func TestDaemonLifecycleLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "dockerd")
	before := rootState(t)
	var dir string
	t.Run("daemon", func(t *testing.T) {
		ns := testutil.NewNetns(t, "frdk")
		t0 := time.Now()
		d := Start(t, ns)
		t.Logf("start took %s", time.Since(t0))
		dir = d.Dir
		if len(d.path("exec/containerd/containerd.sock")) > 100 {
			t.Errorf("socket path too long: %s", d.path("exec/containerd/containerd.sock"))
		}
		c := d.Client()
		v, err := c.ServerVersion(context.Background())
		if err != nil {
			t.Fatalf("server version: %v", err)
		}
		t.Logf("dockerd %s (API %s) in %s, client API %s", v.Version, v.APIVersion, ns.Name, c.ClientVersion())

		d.ImportBusybox(t)
		d.Docker(t, "network", "create", "--subnet", "198.18.7.0/24", "frdk-app")
		out := d.Docker(t, "run", "--rm", "--network", "frdk-app", Image, "sh", "-c", "ip -4 -o addr show eth0; echo ok")
		if !strings.Contains(out, "198.18.7.") || !strings.HasSuffix(out, "ok") {
			t.Fatalf("container output: %q", out)
		}
		// A long-running container: cleanup must remove it and its mounts.
		d.Docker(t, "run", "-d", "--stop-timeout", "1", "--name", "sleeper", "--network", "frdk-app", Image, "sleep", "1000")

		if rules := ns.Run(t, "iptables", "-t", "nat", "-S", "POSTROUTING"); !strings.Contains(rules, "198.18.7.0/24") {
			t.Fatalf("Docker's nat rules not in the namespace:\n%s", rules)
		}

		t0 = time.Now()
		d.Restart()
		t.Logf("restart took %s", time.Since(t0))
		nets, err := c.NetworkList(context.Background(), network.ListOptions{})
		if err != nil {
			t.Fatalf("network list after restart: %v", err)
		}
		found := false
		for _, n := range nets {
			found = found || n.Name == "frdk-app"
		}
		if !found {
			t.Fatalf("network frdk-app lost over a restart: %+v", nets)
		}
	})
	if dir == "" {
		return
	}
	if after := rootState(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", dir, err)
	}
	if pids := pidsMatching(dir); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
	if mps, _ := mounts.Under(dir); len(mps) > 0 {
		t.Errorf("mounts left: %v", mps)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + filepath.Base(dir)); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}
