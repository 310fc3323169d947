package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

const groupLabel = "flannel-registrar.group"

// blocked checks that from's container can neither ping to's container nor
// open a TCP connection to it.
func blocked(ctx context.Context, from, to *testNet) error {
	if err := from.Host.Ping(ctx, from.Container, to.IP); err == nil {
		return fmt.Errorf("ping %s(%s) -> %s(%s) went through", from.Container, from.Host.Name, to.Container, to.Host.Name)
	}
	if peers, err := from.Host.TCPPeers(ctx, from.Container, to.IP); err == nil {
		return fmt.Errorf("tcp %s(%s) -> %s(%s) went through (receiver saw %v)", from.Container, from.Host.Name, to.Container, to.Host.Name, peers)
	}
	return nil
}

// groupNet creates a network with the group label and a container on it.
func groupNet(t *testing.T, ctx context.Context, h *lab.Host, name, subnet, groups string) *testNet {
	t.Helper()
	var extra []string
	if groups != "" {
		extra = []string{"--label", groupLabel + "=" + groups}
	}
	if err := h.CreateNetwork(ctx, name, subnet, extra...); err != nil {
		t.Fatal(err)
	}
	n := &testNet{Host: h, Name: name, Subnet: subnet, Container: "c-" + name}
	cleanupIfThere(t, n)
	ip, err := h.RunContainer(ctx, n.Container, name)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

// cleanupIfThere removes n when the test ends unless the test removed it.
func cleanupIfThere(t *testing.T, n *testNet) {
	t.Cleanup(func() {
		if _, err := n.Host.Docker(context.Background(), "network", "inspect", n.Name); err != nil {
			return // gone already
		}
		if err := n.remove(context.Background()); err != nil {
			t.Errorf("remove network %s: %v", n.Name, err)
		}
	})
}

// inSet says whether host h's ipset of group g holds subnet.
func inSet(ctx context.Context, h *lab.Host, g, subnet string) (bool, error) {
	out, err := h.Run(ctx, "ipset", "list", "FR-G-"+g)
	if err != nil {
		return false, fmt.Errorf("%s: ipset list FR-G-%s: %w: %s", h.Name, g, err, out)
	}
	for _, l := range splitLines(out) {
		if strings.TrimSpace(l) == subnet {
			return true, nil
		}
	}
	return false, nil
}

// diagnose runs "flannel-registrar diagnose" on host h as the daemon runs.
func diagnose(ctx context.Context, l *lab.Lab, h *lab.Host) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+lab.NetnsPath(h.Netns), l.RegistrarPath(), "diagnose")
	cmd.Env = append(os.Environ(), "ETCD_ENDPOINT="+theLab.EtcdEndpointList(), "HOST_NAME="+h.Name, "DOCKER_HOST="+h.DockerHost(), "LOG_FORMAT=json", "ALLOWED_SUBNETS="+lab.AllowedSubnets)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Isolation groups (issue 10) with real traffic, ICMP and TCP, both
// directions: members of one group on two hosts reach each other; another
// group, an ungrouped network and flannel's default network (docker0)
// cannot open anything into the group, while each of them still reaches an
// ungrouped network on the same host (so the block is the group's, not a
// missing route); a grouped network reaches an ungrouped one and gets the
// replies; a network created later in the group is reachable within a
// second of its container being up; removing a member takes it out of the
// other hosts' sets.
func TestIsolationGroups(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	h1, h2, h3 := l.Host(1), l.Host(2), l.Host(3)

	blue1 := groupNet(t, ctx, h1, "blue1", "198.19.60.0/24", "blue")
	blue2 := groupNet(t, ctx, h2, "blue2", "198.19.61.0/24", "blue,green")
	red2 := groupNet(t, ctx, h2, "red2", "198.19.62.0/24", "red")
	open1, open2, open3 := base[1], base[2], base[3] // ungrouped
	dflt2 := &testNet{Host: h2, Name: "bridge", Container: "c-dflt2"}
	cleanupNet2 := func() {
		if err := h2.RemoveContainer(context.Background(), dflt2.Container); err != nil {
			t.Errorf("remove %s: %v", dflt2.Container, err)
		}
	}
	t.Cleanup(cleanupNet2)
	ip, err := h2.RunContainer(ctx, dflt2.Container, "bridge")
	if err != nil {
		t.Fatal(err)
	}
	dflt2.IP = ip
	t.Logf("default bridge container on %s: %s (flannel's subnet)", h2.Name, ip)

	for _, n := range []*testNet{blue1, blue2, red2, open1, open2, open3} {
		eventually(t, 30*time.Second, "route to "+n.Subnet, func() error { return routedEverywhere(l, n) })
	}
	eventually(t, 30*time.Second, "blue members reach each other", func() error {
		return allPairs(ctx, []*testNet{blue1, blue2})
	})

	// Every outsider reaches an ungrouped network on blue1's host (control),
	// and cannot reach into blue.
	for _, from := range []*testNet{red2, open2, open3} {
		if err := reach(ctx, from, open1); err != nil {
			t.Errorf("control: %v", err)
		}
	}
	if err := h2.Ping(ctx, dflt2.Container, open1.IP); err != nil {
		t.Errorf("control: default bridge of %s -> %s: %v", h2.Name, open1.IP, err)
	}
	for _, from := range []*testNet{red2, open2, open3, dflt2} {
		if err := blocked(ctx, from, blue1); err != nil {
			t.Errorf("into the group: %v", err)
		}
	}
	// The other way round: into blue2 (on h2) from h1 and h3.
	for _, from := range []*testNet{open1, open3} {
		if err := blocked(ctx, from, blue2); err != nil {
			t.Errorf("into the group: %v", err)
		}
	}
	// A grouped network reaches ungrouped ones (and gets the replies), but
	// not another group.
	for _, to := range []*testNet{open2, open3} {
		if err := reach(ctx, blue1, to); err != nil {
			t.Errorf("grouped -> ungrouped: %v", err)
		}
	}
	if err := blocked(ctx, blue1, red2); err != nil {
		t.Errorf("blue -> red: %v", err)
	}

	if out, err := diagnose(ctx, l, h1); err != nil {
		t.Errorf("diagnose on %s: %v\n%s", h1.Name, err, out)
	} else if !strings.Contains(out, "FR-G-blue") || !strings.Contains(out, "198.19.61.0/24") {
		t.Errorf("diagnose on %s does not show group blue and its members:\n%s", h1.Name, out)
	} else {
		for _, line := range splitLines(out) {
			if strings.HasPrefix(line, "blue") || strings.HasPrefix(line, "GROUP") {
				t.Logf("diagnose %s: %s", h1.Name, line)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// A network created later in the group, on the third host.
	if err := h3.CreateNetwork(ctx, "blue3", "198.19.63.0/24", "--label", groupLabel+"=blue"); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	blue3 := &testNet{Host: h3, Name: "blue3", Subnet: "198.19.63.0/24", Container: "c-blue3"}
	cleanupIfThere(t, blue3)
	err = poll.Until(ctx, 5*time.Second, 10*time.Millisecond, func() error {
		for _, h := range []*lab.Host{h1, h2} {
			ok, err := inSet(ctx, h, "blue", blue3.Subnet)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s: %s not in FR-G-blue", h.Name, blue3.Subnet)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("new member in the other hosts' sets: %v", err)
	}
	inSets := time.Since(created)
	if blue3.IP, err = h3.RunContainer(ctx, blue3.Container, blue3.Name); err != nil {
		t.Fatal(err)
	}
	// One ping each way (a docker exec costs about 0.1 s of it), then TCP.
	up := time.Now()
	err = poll.Until(ctx, time.Second, 10*time.Millisecond, func() error {
		if err := h1.Ping(ctx, blue1.Container, blue3.IP); err != nil {
			return fmt.Errorf("blue1 -> blue3: %w", err)
		}
		return h3.Ping(ctx, blue3.Container, blue1.IP)
	})
	firstPing := time.Since(up)
	if err != nil || firstPing > time.Second {
		t.Fatalf("new member not reachable within 1s of its container being up (%s): %v", firstPing.Round(time.Millisecond), err)
	}
	eventually(t, 10*time.Second, "all blue pairs with the new member", func() error {
		return allPairs(ctx, []*testNet{blue1, blue2, blue3})
	})
	t.Logf("blue3: in FR-G-blue on %s and %s %s after docker network create; first ping both ways %s after its container was up",
		h1.Name, h2.Name, inSets.Round(time.Millisecond), firstPing.Round(time.Millisecond))
	if err := blocked(ctx, open1, blue3); err != nil {
		t.Errorf("into the new member: %v", err)
	}

	// Removing a member takes it out of every other host's set.
	if err := blue2.remove(ctx); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	eventually(t, 10*time.Second, "removed member out of the sets", func() error {
		for _, h := range []*lab.Host{h1, h3} {
			ok, err := inSet(ctx, h, "blue", blue2.Subnet)
			if err != nil {
				return err
			}
			if ok {
				return fmt.Errorf("%s: %s still in FR-G-blue", h.Name, blue2.Subnet)
			}
		}
		return nil
	})
	t.Logf("blue2 out of FR-G-blue on %s and %s %s after docker network rm", h1.Name, h3.Name, time.Since(removed).Round(time.Millisecond))
}
