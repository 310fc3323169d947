package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// createTopology builds the underlay namespace with its bridge, one
// namespace per etcd member and one per host, each with its eth0 a veth to
// its bridge (in the routed topology also the far bridge and the gateway:
// gateway.go).
// Links are created inside the lab namespaces only ("ip -n"), never in the
// root namespace.
func (l *Lab) createTopology(ctx context.Context) error {
	u := l.UnderlayNetns()
	steps := [][]string{
		{"ip", "netns", "add", u},
		{"ip", "-n", u, "link", "set", "lo", "up"},
		{"ip", "-n", u, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", u, "link", "set", "br0", "up"},
	}
	if l.Routed() {
		steps = append(steps, l.gatewaySteps()...)
	}
	attach := func(ns, veth, bridge, ip string) {
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", u, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", u, "link", "set", veth, "master", bridge, "up"},
			[]string{"ip", "-n", ns, "addr", "add", fmt.Sprintf("%s/%d", ip, l.underlayBits()), "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for i := 1; i <= l.EtcdMembers; i++ {
		attach(l.EtcdMemberNetns(i), "v"+etcdMemberName(i), "br0", EtcdMemberIP(i))
	}
	for _, h := range l.Hosts {
		attach(h.Netns, "v"+h.Name, h.bridge(), h.IP)
	}
	steps = append(steps, l.managementSteps()...)
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return err
		}
	}
	for _, h := range l.Hosts {
		if err := h.configureKernel(ctx); err != nil {
			return err
		}
	}
	return nil
}

// configureKernel makes the host namespace look like a Docker host after
// Docker's first start: forwarding on and FORWARD policy DROP. Docker 20.10
// sets DROP only when it has to switch forwarding on itself; a real host
// boots with forwarding off, so that is the state real hosts end up in.
func (h *Host) configureKernel(ctx context.Context) error {
	steps := [][]string{
		inNetns(h.Netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"),
		inNetns(h.Netns, "iptables", "-w", "-P", "FORWARD", "DROP"),
	}
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

// labNamespaces lists the named namespaces of the lab with this prefix:
// <prefix>underlay, <prefix>etcd<N>, <prefix>gw (routed topology) and <prefix>h<N> exactly, so labs with longer prefixes
// (frlab-e2e-) are not mistaken for this one.
func labNamespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/var/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if isLabNamespace(prefix, e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func isLabNamespace(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	if rest == "underlay" || rest == "gw" {
		return true
	}
	n, ok := strings.CutPrefix(rest, "h")
	if !ok {
		n, ok = strings.CutPrefix(rest, "etcd")
	}
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
