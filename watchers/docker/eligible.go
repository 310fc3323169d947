package docker

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/docker/docker/api/types/network"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Docker network options and labels we read.
const (
	OptBridgeName    = "com.docker.network.bridge.name"
	OptDefaultBridge = "com.docker.network.bridge.default_bridge"
	// LabelEnable set to a false value ("false", "0", …) opts a network out.
	LabelEnable = "flannel-registrar.enable"
)

// verdict says what to do with a network Docker reports.
type verdict int

const (
	accept  verdict = iota
	skip            // not ours by design (default bridge, internal, opted out, …)
	invalid         // looks like ours but its data is unusable
)

// Eligible says whether n is a network flannel-registrar registers and, if
// so, returns it as a state.LocalNetwork. When it is not, reason says why
// (for a debug log line).
func Eligible(n network.Inspect) (state.LocalNetwork, string, bool) {
	ln, reason, v := classify(n)
	return ln, reason, v == accept
}

// classify is Eligible that also tells a deliberate skip from bad data.
// Eligible: user-defined bridge-driver networks of local scope with an IPv4
// subnet; not the default bridge, not internal, not opted out by label.
func classify(n network.Inspect) (state.LocalNetwork, string, verdict) {
	if reason := skipReason(n); reason != "" {
		return state.LocalNetwork{}, reason, skip
	}
	if v, ok := n.Labels[LabelEnable]; ok {
		enabled, err := strconv.ParseBool(v)
		if err != nil {
			return state.LocalNetwork{}, fmt.Sprintf("label %s=%q is not a boolean", LabelEnable, v), invalid
		}
		if !enabled {
			return state.LocalNetwork{}, fmt.Sprintf("label %s=%s", LabelEnable, v), skip
		}
	}
	if len(n.ID) < 12 {
		return state.LocalNetwork{}, fmt.Sprintf("network ID %q is too short", n.ID), invalid
	}
	subnet, gw, reason, v := ipv4Config(n.IPAM.Config)
	if v != accept {
		return state.LocalNetwork{}, reason, v
	}
	bridge := n.Options[OptBridgeName]
	if bridge == "" {
		bridge = "br-" + n.ID[:12]
	}
	var groups []string
	if v, ok := n.Labels[registry.GroupLabel]; ok {
		g, err := registry.ParseGroups(v)
		if err != nil {
			return state.LocalNetwork{}, err.Error(), invalid
		}
		groups = g
	}
	return state.LocalNetwork{ID: n.ID, Name: n.Name, Subnet: subnet, Gateway: gw, Bridge: bridge, Groups: groups}, "", accept
}

// skipReason names why n is not a user-defined local bridge network.
func skipReason(n network.Inspect) string {
	switch {
	case n.Driver != "bridge":
		return fmt.Sprintf("driver %q is not bridge", n.Driver)
	case n.Name == "bridge" || n.Options[OptDefaultBridge] == "true":
		return "Docker's default bridge"
	case n.Name == "docker_gwbridge":
		return "swarm's gateway bridge (the same subnet on every host)"
	case n.Scope != "" && n.Scope != "local":
		return fmt.Sprintf("scope %q is not local", n.Scope)
	case n.ConfigOnly:
		return "config-only network"
	case n.Internal:
		return "internal network (no traffic leaves the host)"
	}
	return ""
}

// ipv4Config returns the first IPv4 subnet of the IPAM config and its
// gateway (zero when Docker shows none).
func ipv4Config(cfgs []network.IPAMConfig) (netip.Prefix, netip.Addr, string, verdict) {
	for _, c := range cfgs {
		p, err := netip.ParsePrefix(c.Subnet)
		if err != nil {
			return netip.Prefix{}, netip.Addr{}, fmt.Sprintf("IPAM subnet %q: %v", c.Subnet, err), invalid
		}
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		gw, err := parseGateway(c.Gateway)
		if err != nil {
			return netip.Prefix{}, netip.Addr{}, fmt.Sprintf("IPAM gateway %q of %s: %v", c.Gateway, p, err), invalid
		}
		if gw.IsValid() && !p.Contains(gw) {
			return netip.Prefix{}, netip.Addr{}, fmt.Sprintf("IPAM gateway %s is outside %s", gw, p), invalid
		}
		return p, gw, "", accept
	}
	return netip.Prefix{}, netip.Addr{}, "no IPv4 subnet", skip
}

// parseGateway accepts "", an address, or an address with a prefix length
// (some Docker versions report the gateway as CIDR).
func parseGateway(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an address")
	}
	return p.Addr(), nil
}
