package forwarding

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// trafficLab is three namespaces: host (Docker's defaults, a bridge network
// 198.18.5.0/24 with one "container", a device called flannel.1 towards the
// peer), container, and peer (another host across the overlay,
// 198.18.200.2). The overlay is a plain veth: what matters here is the
// host's forwarding and NAT.
type trafficLab struct {
	host, ctr, peer *testutil.Netns
}

func newTrafficLab(t *testing.T) *trafficLab {
	t.Helper()
	testutil.RequireBinary(t, "busybox")
	l := &trafficLab{host: testutil.NewNetns(t, "frdk"), ctr: testutil.NewNetns(t, "frdk"), peer: testutil.NewNetns(t, "frdk")}
	h, c, p := l.host, l.ctr, l.peer
	h.Run(t, "ip", "link", "add", "br-app1", "type", "bridge")
	h.Run(t, "ip", "addr", "add", "198.18.5.1/24", "dev", "br-app1")
	h.Run(t, "ip", "link", "set", "br-app1", "up")
	h.Run(t, "ip", "link", "add", "veth-c", "type", "veth", "peer", "name", "eth0", "netns", c.Name)
	h.Run(t, "ip", "link", "set", "veth-c", "master", "br-app1", "up")
	c.Run(t, "ip", "addr", "add", "198.18.5.2/24", "dev", "eth0")
	c.Run(t, "ip", "link", "set", "eth0", "up")
	c.Run(t, "ip", "route", "add", "default", "via", "198.18.5.1")
	h.Run(t, "ip", "link", "add", "flannel.1", "type", "veth", "peer", "name", "eth0", "netns", p.Name)
	h.Run(t, "ip", "addr", "add", "198.18.200.1/24", "dev", "flannel.1")
	h.Run(t, "ip", "link", "set", "flannel.1", "up")
	p.Run(t, "ip", "addr", "add", "198.18.200.2/24", "dev", "eth0")
	p.Run(t, "ip", "link", "set", "eth0", "up")
	p.Run(t, "ip", "route", "add", "198.18.5.0/24", "via", "198.18.200.1")
	h.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Docker 20.10's rules for a bridge network.
	for _, args := range [][]string{
		{"-P", "FORWARD", "DROP"},
		{"-N", "DOCKER-USER"},
		{"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"},
		{"-A", "FORWARD", "-o", "br-app1", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-A", "FORWARD", "-i", "br-app1", "!", "-o", "br-app1", "-j", "ACCEPT"},
		{"-t", "nat", "-A", "POSTROUTING", "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE"},
	} {
		h.Run(t, "iptables", args...)
	}
	// The peer counts the sources it sees.
	p.Run(t, "iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-s", "198.18.5.2")
	p.Run(t, "iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-s", "198.18.200.1")
	return l
}

func ping(ns *testutil.Netns, dst string) error {
	out, err := ns.Try("busybox", "ping", "-c", "1", "-W", "1", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", dst, ns.Name, err, out)
	}
	return nil
}

// peerSaw returns how many echo requests the peer saw from the container's
// own address and from the host's (masqueraded) address.
func (l *trafficLab) peerSaw(t *testing.T) (own, masqueraded int) {
	t.Helper()
	out := l.peer.Run(t, "iptables", "-L", "INPUT", "-n", "-v", "-x")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, "198.18.5.2"):
			own = n
		case strings.Contains(line, "198.18.200.1"):
			masqueraded = n
		}
	}
	return own, masqueraded
}

// TestRealTrafficThroughDockerDefaults proves the rules do what design.md
// says: without them the peer cannot reach the container (FORWARD policy
// DROP) and sees the container's traffic masqueraded; with them both
// directions work and the peer sees the container's own address.
func TestRealTrafficThroughDockerDefaults(t *testing.T) {
	testutil.RequireRoot(t)
	l := newTrafficLab(t)

	if err := ping(l.peer, "198.18.5.2"); err == nil {
		t.Fatal("peer reached the container through Docker's FORWARD DROP without our rules")
	}
	if err := ping(l.ctr, "198.18.200.2"); err != nil {
		t.Fatalf("container → peer before our rules: %v", err)
	}
	if own, masq := l.peerSaw(t); own != 0 || masq != 1 {
		t.Fatalf("before our rules the peer saw own=%d masqueraded=%d, want 0/1", own, masq)
	}

	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "198.18.5.0/24")}, "test")
	c, err := New(s, Options{IPTables: newNsIPT(t, l.host), IPSets: netlinkxtest.Handle(t, l.host)})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)
	if err := ping(l.peer, "198.18.5.2"); err != nil {
		t.Fatalf("peer → container with our rules: %v", err)
	}
	// A new flow: busybox ping uses a new ICMP id, so no conntrack entry (and
	// no NAT mapping) of the first ping applies.
	if err := ping(l.ctr, "198.18.200.2"); err != nil {
		t.Fatalf("container → peer with our rules: %v", err)
	}
	if own, masq := l.peerSaw(t); own != 1 || masq != 1 {
		t.Fatalf("with our rules the peer saw own=%d masqueraded=%d, want 1/1", own, masq)
	}

	// The network goes: its rules go, and the peer is locked out again.
	s.DeleteLocal("app1", "test")
	reconcileOK(t, c)
	if err := ping(l.peer, "198.18.5.2"); err == nil {
		t.Fatal("peer still reaches the container after the network's rules were removed")
	}
}
