package e2e

// The file name sorts last, so this scenario runs after every binary-mode
// scenario; it swaps the lab's registrars for containers and back.

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// netAdminOnly is CapEff/CapPrm/CapBnd/CapAmb with NET_ADMIN (bit 12) and
// NET_RAW (bit 13, for iptables' set match) alone.
const netAdminOnly = "0000000000003000"

// The deployment users run: on every host the registrar as a container from
// the image `make image` builds (FR_E2E_IMAGE: a prebuilt tarball), started
// with the repo's docker-compose.yml with only the etcd endpoint, host name,
// socket path and ALLOWED_SUBNETS (the lab's networks are in the benchmark
// range) overridden. It takes over from the binary without a route
// disappearing anywhere; inside, the daemon runs unprivileged with NET_ADMIN
// only; docker reports it healthy; all pairs reach each other with source IPs
// kept, also through a network created now; `docker stop` exits 0 and leaves
// every route in place, and `docker start` changes nothing.
func TestRegistrarAsContainer(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	l.RegistrarImageFile = os.Getenv("FR_E2E_IMAGE")
	t0 := time.Now()
	if err := l.BuildRegistrarImage(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("registrar image ready in %s", time.Since(t0).Round(100*time.Millisecond))

	mon := watchRoutes(t, l, baseNets())
	for _, h := range l.Hosts {
		if err := h.Stop(ctx, lab.Registrar); err != nil {
			t.Fatal(err)
		}
	}
	l.RegistrarContainer = true
	t.Cleanup(func() { backToBinary(t, l) })
	started := map[string]time.Time{}
	for _, h := range l.Hosts {
		started[h.Name] = time.Now()
		if err := h.StartRegistrarContainer(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range l.Hosts {
		if err := h.WaitRegistrarHealthy(ctx, 90*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: container start to healthy %s", h.Name, time.Since(started[h.Name]).Round(100*time.Millisecond))
	}
	for _, h := range l.Hosts {
		checkUnprivileged(t, h)
	}

	eventually(t, 60*time.Second, "all pairs with containerized registrars", func() error { return allPairs(ctx, baseNets()) })
	n, err := newNet(ctx, l.Host(2), "ctr", "198.19.60.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cleanupNet(t, n)
	eventually(t, 30*time.Second, "network created under the containers", func() error {
		if err := routedEverywhere(l, n); err != nil {
			return err
		}
		return allPairs(ctx, []*testNet{base[1], base[3], n})
	})
	if misses, polls := mon.stop(); len(misses) > 0 {
		t.Errorf("routes missing while the binaries handed over to containers (%d of %d checks), first: %s",
			len(misses), polls, strings.Join(misses[:min(5, len(misses))], "\n"))
	}

	// docker stop / docker start on h1: the other hosts keep every route.
	h := l.Host(1)
	revs := createRevisions(t, l, registrarPrefix+"h1/")
	mon = watchRoutes(t, l, append(baseNets(), n))
	t1 := time.Now()
	if _, err := h.Docker(ctx, "stop", lab.RegistrarContainerName); err != nil {
		t.Fatal(err)
	}
	stopTook := time.Since(t1)
	st, err := h.RegistrarContainerState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker stop took %s; exit code %d", stopTook.Round(time.Millisecond), st.ExitCode)
	if st.Running || st.ExitCode != 0 {
		t.Errorf("after docker stop: running %v, exit code %d, want stopped with 0", st.Running, st.ExitCode)
	}
	if stopTook > 5*time.Second {
		t.Errorf("docker stop took %s, want a few seconds at most (SIGTERM ignored?)", stopTook)
	}
	// Longer than the peers' INTERVAL: they resync at least once meanwhile.
	wait(t, time.Duration(l.Interval+5)*time.Second)
	eventually(t, 10*time.Second, "traffic to h1 with its registrar stopped", func() error {
		return allPairs(ctx, []*testNet{base[1], base[2], n})
	})
	t2 := time.Now()
	if _, err := h.Docker(ctx, "start", lab.RegistrarContainerName); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitRegistrarHealthy(ctx, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("docker start to healthy %s", time.Since(t2).Round(100*time.Millisecond))
	wait(t, 5*time.Second)
	misses, polls := mon.stop()
	t.Logf("%d route checks across docker stop and start", polls)
	if len(misses) > 0 {
		t.Errorf("routes flapped across docker stop/start (%d), first: %s", len(misses), strings.Join(misses[:min(5, len(misses))], "\n"))
	}
	for k, rev := range createRevisions(t, l, registrarPrefix+"h1/") {
		if old, ok := revs[k]; ok && old != rev {
			t.Errorf("%s was re-created across docker stop/start (create revision %d -> %d)", k, old, rev)
		}
	}
	checkUnprivileged(t, h)
	eventually(t, 30*time.Second, "all pairs after docker start", func() error { return allPairs(ctx, baseNets()) })
	if t.Failed() {
		for _, h := range l.Hosts {
			out, _ := h.RegistrarLogs(ctx)
			lines := splitLines(out)
			t.Logf("---- %s registrar container log (tail) ----\n%s", h.Name, joinLines(lines[max(0, len(lines)-25):]))
		}
	}
}

// checkUnprivileged reads the containerized daemon's /proc/<pid>/status:
// a non-zero uid, the socket's group, NET_ADMIN and NET_RAW only; and logs its RSS.
func checkUnprivileged(t *testing.T, h *lab.Host) {
	t.Helper()
	st, err := h.RegistrarContainerState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	status, err := testutil.ProcStatus(st.Pid)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	if uid := strings.Fields(status["Uid"]); len(uid) < 2 || uid[0] == "0" || uid[1] == "0" {
		t.Errorf("%s: container daemon Uid %q, want non-zero", h.Name, status["Uid"])
	}
	for _, k := range []string{"CapEff", "CapPrm", "CapAmb", "CapBnd"} {
		if status[k] != netAdminOnly {
			t.Errorf("%s: container daemon %s = %s, want %s (NET_ADMIN and NET_RAW only)", h.Name, k, status[k], netAdminOnly)
		}
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("%s: NoNewPrivs %q", h.Name, status["NoNewPrivs"])
	}
	sock, err := os.Stat(h.DockerSocket())
	if err != nil {
		t.Fatal(err)
	}
	gid := strconv.Itoa(int(sock.Sys().(*syscall.Stat_t).Gid))
	if !slices.Contains(strings.Fields(status["Groups"]), gid) {
		t.Errorf("%s: container daemon Groups %q, want the socket's group %s", h.Name, status["Groups"], gid)
	}
	t.Logf("%s: pid %d Uid %s Groups %s CapEff %s VmRSS %s", h.Name, st.Pid, status["Uid"], status["Groups"], status["CapEff"], status["VmRSS"])
}

// backToBinary removes the containers and starts the binary registrars
// again, so the lab is as the other scenarios expect.
func backToBinary(t *testing.T, l *lab.Lab) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, h := range l.Hosts {
		if err := h.RemoveRegistrarContainer(ctx); err != nil {
			t.Errorf("%v", err)
		}
	}
	l.RegistrarContainer = false
	for _, h := range l.Hosts {
		if !h.Running(lab.Registrar) {
			if err := h.Start(ctx, lab.Registrar); err != nil {
				t.Errorf("restart the binary registrar on %s: %v", h.Name, err)
			}
		}
	}
}
