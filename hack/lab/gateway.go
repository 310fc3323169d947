package lab

import "fmt"

// The routed topology (Options.Topology = TopologyRouted): the hosts sit on
// two underlay subnets, joined only by a gateway namespace that routes
// between them, so VXLAN traffic between the two sides needs an underlay
// route through the gateway (HOST_GATEWAY_MAP). The near subnet holds etcd
// (on br0 of the underlay namespace) and the first half of the hosts; the far
// subnet (br1, no address in the underlay namespace) the others. A far host
// reaches etcd by a /32 route through the gateway, its management path, and
// nothing else: without HOST_GATEWAY_MAP no packet of a near host reaches a
// far host or back. The underlay namespace does not forward, so the gateway
// namespace is the only way across.
//
// The gateway namespace also holds ExtraCIDR on its loopback device: a range any
// host reaches only with a static route via the gateway (FLANNEL_ROUTES_EXTRA).
const (
	TopologyFlat   = ""       // one underlay /24, every host on it
	TopologyRouted = "routed" // two /25s joined by <prefix>gw

	NearCIDR = "198.51.100.0/25"   // etcd and hosts h1..h⌈n/2⌉
	FarCIDR  = "198.51.100.128/25" // the other hosts
	// GatewayNearIP and GatewayFarIP are the gateway's legs in each subnet:
	// the next hop to the other side.
	GatewayNearIP = "198.51.100.1"
	GatewayFarIP  = "198.51.100.129"
	// ExtraCIDR is a range only the gateway holds (ExtraIP on its
	// loopback device): the next hop of a FLANNEL_ROUTES_EXTRA route.
	ExtraCIDR = "203.0.113.0/24"
	ExtraIP   = "203.0.113.1"

	routedBits     = 25
	maxRoutedHosts = 100
)

// GatewayNetns is the gateway namespace of the routed topology.
func (l *Lab) GatewayNetns() string { return l.Prefix + "gw" }

// Routed says whether the lab uses the routed topology.
func (l *Lab) Routed() bool { return l.Topology == TopologyRouted }

// Far says whether the host sits on the far subnet (routed topology only):
// the hosts after the first half, h3 of three.
func (h *Host) Far() bool {
	return h.lab.Routed() && h.Index > (len(h.lab.Hosts)+1)/2
}

// SubnetCIDR is the underlay subnet the host sits on.
func (h *Host) SubnetCIDR() string {
	switch {
	case !h.lab.Routed():
		return fmt.Sprintf("198.51.100.0/%d", UnderlayCIDRLen)
	case h.Far():
		return FarCIDR
	}
	return NearCIDR
}

// GatewayIP is the gateway's address on the host's subnet (routed topology
// only): the next hop to the other side.
func (h *Host) GatewayIP() string {
	if h.Far() {
		return GatewayFarIP
	}
	return GatewayNearIP
}

// OtherSideCIDR is the underlay subnet across the gateway from the host
// (routed topology only).
func (h *Host) OtherSideCIDR() string {
	if h.Far() {
		return NearCIDR
	}
	return FarCIDR
}

// GatewayMapEnv is the HOST_GATEWAY_MAP setting that makes the other side
// reachable from this host: the other subnet via this side's gateway leg.
func (h *Host) GatewayMapEnv() string {
	return "HOST_GATEWAY_MAP=" + h.OtherSideCIDR() + ":" + h.GatewayIP()
}

// topologyEnv is the registrar's environment the topology asks for, before
// the lab's RegistrarEnv and any extra settings (which override it).
func (h *Host) topologyEnv() []string {
	if h.lab.Routed() && h.lab.GatewayMap {
		return []string{h.GatewayMapEnv()}
	}
	return nil
}

// checkTopology validates Options.Topology.
func (o *Options) checkTopology() error {
	switch o.Topology {
	case TopologyFlat, "flat":
		o.Topology = TopologyFlat
		return nil
	case TopologyRouted:
		if o.Hosts < 2 || o.Hosts > maxRoutedHosts {
			return fmt.Errorf("hosts: %d, the routed topology needs 2..%d", o.Hosts, maxRoutedHosts)
		}
		return nil
	}
	return fmt.Errorf("topology %q: expected %q or %q", o.Topology, "flat", TopologyRouted)
}

// hostIP is host i's underlay address: 198.51.100.(10+i) in the flat
// topology; in the routed one the far hosts are at 198.51.100.(128+10+i).
func hostIP(o Options, i int) string {
	if o.Topology == TopologyRouted && i > (o.Hosts+1)/2 {
		return fmt.Sprintf("198.51.100.%d", 128+10+i)
	}
	return fmt.Sprintf("198.51.100.%d", 10+i)
}

// underlayBits is the prefix length of the hosts' and etcd's underlay
// addresses.
func (l *Lab) underlayBits() int {
	if l.Routed() {
		return routedBits
	}
	return UnderlayCIDRLen
}

// bridge is the underlay namespace's bridge the host's veth joins.
func (h *Host) bridge() string {
	if h.Far() {
		return "br1"
	}
	return "br0"
}

// gatewaySteps add the far bridge and the gateway namespace with its two
// legs and its extra range, and route the underlay namespace's answers to
// far hosts through the gateway (routed topology; before the hosts' veths
// join their bridges).
func (l *Lab) gatewaySteps() [][]string {
	u, g := l.UnderlayNetns(), l.GatewayNetns()
	steps := [][]string{
		// The underlay namespace never forwards: the gateway is the only
		// way across.
		inNetns(u, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"),
		{"ip", "-n", u, "link", "add", "br1", "type", "bridge"},
		{"ip", "-n", u, "link", "set", "br1", "up"},
		{"ip", "netns", "add", g},
		{"ip", "-n", g, "link", "set", "lo", "up"},
		inNetns(g, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"),
	}
	for i, leg := range []struct{ br, addr string }{{"br0", GatewayNearIP}, {"br1", GatewayFarIP}} {
		veth, dev := fmt.Sprintf("vgw%d", i), fmt.Sprintf("eth%d", i)
		steps = append(steps,
			[]string{"ip", "-n", u, "link", "add", veth, "type", "veth", "peer", "name", dev, "netns", g},
			[]string{"ip", "-n", u, "link", "set", veth, "master", leg.br, "up"},
			[]string{"ip", "-n", g, "addr", "add", fmt.Sprintf("%s/%d", leg.addr, routedBits), "dev", dev},
			[]string{"ip", "-n", g, "link", "set", dev, "up"},
		)
	}
	return append(steps,
		// On lo (no dummy module needed): the whole range is local there.
		[]string{"ip", "-n", g, "addr", "add", ExtraIP + "/24", "dev", "lo"},
	)
}

// managementSteps give every far host its only route across, a /32 to each
// etcd member through the gateway, and every member the way back (after the
// members' and hosts' eth0 are up; routed topology only).
func (l *Lab) managementSteps() [][]string {
	if !l.Routed() {
		return nil
	}
	var steps [][]string
	for i := 1; i <= l.EtcdMembers; i++ {
		steps = append(steps, []string{"ip", "-n", l.EtcdMemberNetns(i), "route", "add", FarCIDR, "via", GatewayNearIP, "dev", "eth0"})
	}
	for _, h := range l.Hosts {
		if !h.Far() {
			continue
		}
		for i := 1; i <= l.EtcdMembers; i++ {
			e := EtcdMemberIP(i)
			steps = append(steps, []string{"ip", "-n", h.Netns, "route", "add", e + "/32", "via", GatewayFarIP, "dev", "eth0"})
		}
	}
	return steps
}
