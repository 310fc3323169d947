// Package doctor decides the checks of `flannel-registrar doctor`. Each check
// is a pure function of gathered Facts, returning ok, warn or fail with one
// line saying why and what to do, so every decision is unit-tested; the
// command gathers the facts (cmd/flannel-registrar/app) and prints the
// results. Any fail makes the command exit non-zero.
package doctor

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
)

// Level is a check's outcome.
type Level string

// Levels, from good to bad.
const (
	OK   Level = "ok"
	Warn Level = "warn"
	Fail Level = "fail"
)

// Result is one check's outcome.
type Result struct {
	Check string `json:"check"`
	Level Level  `json:"level"`
	Why   string `json:"why"`           // what was found
	Fix   string `json:"fix,omitempty"` // what to do (warn, fail)
}

// Lease is this host's view of one flannel vxlan lease.
type Lease struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	VtepMAC  string
}

// Peer is one peer's reachability through the overlay.
type Peer struct {
	Name      string
	PublicIP  string
	Probed    bool
	Reachable bool
}

// Facts are what the checks decide on. A string fact that could not be
// read is "" with its error in the matching Err field.
type Facts struct {
	VXLANIface   string
	VXLANPresent bool
	VXLANMTU     int
	VXLANMAC     string

	IPForward    string // contents of /proc/sys/net/ipv4/ip_forward
	IPForwardErr error
	RPFilterAll  string // /proc/sys/net/ipv4/conf/all/rp_filter
	RPFilterDev  string // /proc/sys/net/ipv4/conf/<vxlan>/rp_filter
	RPFilterErr  error

	IPTablesErr      error
	ForwardPolicy    string // "ACCEPT" or "DROP"
	LocalRegistered  int    // local networks that should have forwarding rules
	FilterJumped     bool   // our filter chain is jumped from DOCKER-USER or FORWARD
	NATJumped        bool   // our nat chain is jumped from POSTROUTING
	DockerErr        error
	DockerVersion    string
	DirectRoutingMsg string // forwarding.DirectRoutingWarning's text; "" when fine

	BridgeMTUs map[string]int // Docker network name → bridge MTU

	SelfPublicIP netip.Addr
	Leases       []Lease // vxlan leases in etcd
	EtcdErr      error
	EtcdVersion  string

	HostName string
	// OtherRegistrars are the PublicIPs of other live registrars using
	// HOST_NAME (host record or liveness markers not ours).
	OtherRegistrars []string

	Peers    []Peer
	PeersErr error // probing not possible
	// UnlistedDown and UnlistedUnknown count the unreachable and the
	// undecided peers beyond those in Peers (the daemon's status entry
	// lists at most a thousand peers in full).
	UnlistedDown, UnlistedUnknown int

	Leftovers map[string]int // the original tool's keys by kind
}

// Run returns every check's result, in a fixed order.
func Run(f Facts) []Result {
	return []Result{
		IPForward(f), RPFilter(f), Forwarding(f), DirectRouting(f), MTU(f),
		FlannelLease(f), Peers(f), Etcd(f), HostName(f), Leftovers(f),
	}
}

// Failed says whether any result failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Level == Fail {
			return true
		}
	}
	return false
}

// IPForward checks forwarding: without forwarding, nothing reaches a container from another host.
func IPForward(f Facts) Result {
	r := Result{Check: "ip_forward"}
	switch v := strings.TrimSpace(f.IPForward); {
	case f.IPForwardErr != nil:
		r.Level, r.Why, r.Fix = Warn, "cannot read net.ipv4.ip_forward: "+f.IPForwardErr.Error(), "run doctor on the host (or with /proc of the host)"
	case v == "1":
		r.Level, r.Why = OK, "net.ipv4.ip_forward=1"
	default:
		r.Level, r.Why = Fail, fmt.Sprintf("net.ipv4.ip_forward=%s: the kernel does not forward between %s and the container bridges", v, f.VXLANIface)
		r.Fix = "sysctl -w net.ipv4.ip_forward=1 (and set it in /etc/sysctl.d/ so it survives a reboot)"
	}
	return r
}

// RPFilter checks rp_filter on the VXLAN device. The effective value on a device is the larger of "all" and the
// device's. Strict mode (1) drops packets from a peer subnet this host does
// not route back through the device (conflicts, refusals, asymmetric paths).
func RPFilter(f Facts) Result {
	r := Result{Check: "rp_filter"}
	if f.RPFilterErr != nil {
		r.Level, r.Why, r.Fix = Warn, "cannot read rp_filter: "+f.RPFilterErr.Error(), "check that "+f.VXLANIface+" exists"
		return r
	}
	all, dev := strings.TrimSpace(f.RPFilterAll), strings.TrimSpace(f.RPFilterDev)
	eff := max(all, dev) // "0" < "1" < "2": the kernel takes the larger
	switch eff {
	case "0", "2":
		r.Level, r.Why = OK, fmt.Sprintf("rp_filter on %s is %s (all=%s, %s=%s)", f.VXLANIface, eff, all, f.VXLANIface, dev)
	default:
		r.Level, r.Why = Warn, fmt.Sprintf("rp_filter on %s is strict (all=%s, %s=%s): replies from subnets not routed back through %s are dropped", f.VXLANIface, all, f.VXLANIface, dev, f.VXLANIface)
		r.Fix = fmt.Sprintf("sysctl -w net.ipv4.conf.%s.rp_filter=2 net.ipv4.conf.all.rp_filter=2 (loose)", strings.ReplaceAll(f.VXLANIface, ".", "/"))
	}
	return r
}

// Forwarding checks Docker's FORWARD policy against our chains. Docker's FORWARD policy DROP is fine as long as our chains
// are in place; they are only needed once a local network is registered.
func Forwarding(f Facts) Result {
	r := Result{Check: "forwarding"}
	switch {
	case f.IPTablesErr != nil:
		r.Level, r.Why, r.Fix = Warn, "cannot read iptables: "+f.IPTablesErr.Error(), "run doctor as root on the host"
	case f.LocalRegistered == 0:
		r.Level, r.Why = OK, fmt.Sprintf("FORWARD policy %s; no local network registered, so no rules are needed", f.ForwardPolicy)
	case !f.FilterJumped || !f.NATJumped:
		missing := []string{}
		if !f.FilterJumped {
			missing = append(missing, "filter FLANNEL-REGISTRAR-FWD (from DOCKER-USER)")
		}
		if !f.NATJumped {
			missing = append(missing, "nat FLANNEL-REGISTRAR-NAT (from POSTROUTING)")
		}
		lvl := Warn
		if f.ForwardPolicy == "DROP" && !f.FilterJumped {
			lvl = Fail
		}
		r.Level = lvl
		r.Why = fmt.Sprintf("FORWARD policy %s and %d local networks registered, but not jumped: %s", f.ForwardPolicy, f.LocalRegistered, strings.Join(missing, ", "))
		r.Fix = "check that the registrar runs (it restores its chains within seconds) and that nothing flushes them; see its log"
	default:
		r.Level, r.Why = OK, fmt.Sprintf("FORWARD policy %s; our filter and nat chains are jumped", f.ForwardPolicy)
	}
	return r
}

// DirectRouting checks the Docker version: Docker 28+ drops routed traffic to containers unless allowed.
func DirectRouting(f Facts) Result {
	r := Result{Check: "docker_direct_routing"}
	switch {
	case f.DockerErr != nil:
		r.Level, r.Why, r.Fix = Warn, "cannot ask Docker its version: "+f.DockerErr.Error(), "check DOCKER_HOST and the socket mount"
	case f.DirectRoutingMsg != "":
		r.Level, r.Why, r.Fix = Fail, "Docker "+f.DockerVersion+" blocks direct routing to containers (moby/moby#49792)", f.DirectRoutingMsg
	default:
		r.Level, r.Why = OK, "Docker "+f.DockerVersion+" routes traffic from other hosts to containers"
	}
	return r
}

// MTU checks container networks against the VXLAN device: a bridge MTU above the VXLAN device's makes large packets to other
// hosts need fragmentation or PMTU discovery (VXLAN adds 50 bytes).
func MTU(f Facts) Result {
	r := Result{Check: "mtu"}
	if !f.VXLANPresent {
		r.Level, r.Why = Warn, f.VXLANIface+" missing: cannot compare MTUs"
		r.Fix = "start flanneld"
		return r
	}
	var over []string
	names := make([]string, 0, len(f.BridgeMTUs))
	for n := range f.BridgeMTUs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if m := f.BridgeMTUs[n]; m > f.VXLANMTU {
			over = append(over, fmt.Sprintf("%s=%d", n, m))
		}
	}
	if len(over) > 0 {
		r.Level = Warn
		r.Why = fmt.Sprintf("container networks with an MTU above %s's %d: %s (large packets to other hosts are fragmented or dropped)", f.VXLANIface, f.VXLANMTU, strings.Join(over, ", "))
		r.Fix = fmt.Sprintf("create those networks with -o com.docker.network.driver.mtu=%d (or set \"mtu\" in daemon.json)", f.VXLANMTU)
		return r
	}
	r.Level, r.Why = OK, fmt.Sprintf("%d container networks, none above %s's MTU %d", len(f.BridgeMTUs), f.VXLANIface, f.VXLANMTU)
	return r
}

// FlannelLease checks flanneld's lease for this host: it must name this host's
// PublicIP and the device's MAC, or peers send its traffic elsewhere.
func FlannelLease(f Facts) Result {
	r := Result{Check: "flannel_lease"}
	switch {
	case f.EtcdErr != nil:
		r.Level, r.Why, r.Fix = Warn, "etcd unreachable: cannot read flannel's leases", "see the etcd check"
		return r
	case !f.VXLANPresent:
		r.Level, r.Why, r.Fix = Fail, f.VXLANIface+" is missing: flanneld is not running or lost its device", "restart flanneld (RECOVERY=flannel does it automatically)"
		return r
	}
	var byIP, byMAC *Lease
	for i := range f.Leases {
		l := &f.Leases[i]
		if f.SelfPublicIP.IsValid() && l.PublicIP == f.SelfPublicIP {
			byIP = l
		}
		if sameMAC(l.VtepMAC, f.VXLANMAC) {
			byMAC = l
		}
	}
	switch {
	case byIP != nil && sameMAC(byIP.VtepMAC, f.VXLANMAC):
		r.Level, r.Why = OK, fmt.Sprintf("lease %s names %s and %s", byIP.Subnet, byIP.PublicIP, byIP.VtepMAC)
	case byIP != nil:
		r.Level = Fail
		r.Why = fmt.Sprintf("lease %s names VTEP MAC %s but %s has %s: peers send to a device that no longer exists", byIP.Subnet, byIP.VtepMAC, f.VXLANIface, f.VXLANMAC)
		r.Fix = "restart flanneld so it republishes its lease"
	case byMAC != nil:
		r.Level = Fail
		r.Why = fmt.Sprintf("lease %s has this host's MAC but PublicIP %s, not %s", byMAC.Subnet, byMAC.PublicIP, f.SelfPublicIP)
		r.Fix = "set FLANNELD_PUBLIC_IP to flanneld's --public-ip (or fix flanneld's --public-ip)"
	default:
		r.Level = Fail
		r.Why = fmt.Sprintf("no flannel lease names this host (PublicIP %s, MAC %s)", f.SelfPublicIP, f.VXLANMAC)
		r.Fix = "check flanneld's log (it renews its lease every few hours; an etcd restore can drop it); restart flanneld"
	}
	return r
}

func sameMAC(a, b string) bool {
	x, err1 := net.ParseMAC(a)
	y, err2 := net.ParseMAC(b)
	return err1 == nil && err2 == nil && x.String() == y.String()
}

// Peers checks the VXLAN (UDP 8472) path to each peer, from the reachability probes.
func Peers(f Facts) Result {
	r := Result{Check: "vxlan_peers"}
	if f.EtcdErr != nil {
		r.Level, r.Why, r.Fix = Warn, "etcd unreachable: the peers are not known", "see the etcd check"
		return r
	}
	if f.PeersErr != nil {
		r.Level, r.Why, r.Fix = Warn, "peers not probed: "+f.PeersErr.Error(), "run doctor as root (ICMP needs CAP_NET_RAW)"
		return r
	}
	var down, unknown []string
	for _, p := range f.Peers {
		name := p.Name
		if name == "" || name == p.PublicIP {
			name = p.PublicIP
		} else {
			name += " (" + p.PublicIP + ")"
		}
		switch {
		case !p.Probed:
			unknown = append(unknown, name)
		case !p.Reachable:
			down = append(down, name)
		}
	}
	total := len(f.Peers) + f.UnlistedDown + f.UnlistedUnknown
	switch {
	case total == 0:
		r.Level, r.Why = OK, "no peers"
	case len(down)+f.UnlistedDown > 0:
		r.Level = Fail
		r.Why = fmt.Sprintf("%d of %d peers unreachable through %s: %s", len(down)+f.UnlistedDown, total, f.VXLANIface, names(down, f.UnlistedDown))
		r.Fix = "check UDP 8472 between the hosts' PublicIPs (firewalls, security groups) and that flanneld runs there"
	case len(unknown)+f.UnlistedUnknown > 0:
		r.Level = Warn
		r.Why = fmt.Sprintf("%d of %d peers not decided yet: %s", len(unknown)+f.UnlistedUnknown, total, names(unknown, f.UnlistedUnknown))
		r.Fix = "run doctor again in a few seconds"
	default:
		r.Level, r.Why = OK, fmt.Sprintf("all %d peers answer through %s", total, f.VXLANIface)
	}
	return r
}

// maxNamed is how many peers a line names; the others are counted.
const maxNamed = 10

// names joins the first maxNamed of ns and counts the rest with more.
func names(ns []string, more int) string {
	if len(ns) > maxNamed {
		more += len(ns) - maxNamed
		ns = ns[:maxNamed]
	}
	s := strings.Join(ns, ", ")
	switch {
	case more > 0 && s == "":
		s = fmt.Sprintf("%d not named", more)
	case more > 0:
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// Etcd checks that etcd is reachable, with its version.
func Etcd(f Facts) Result {
	if f.EtcdErr != nil {
		return Result{Check: "etcd", Level: Fail, Why: "etcd unreachable: " + f.EtcdErr.Error(),
			Fix: "check ETCD_ENDPOINT, TLS and credentials, and that etcd runs"}
	}
	return Result{Check: "etcd", Level: OK, Why: "etcd " + f.EtcdVersion + " answers"}
}

// HostName checks that HOST_NAME is unique: two registrars with one HOST_NAME overwrite each other's view.
func HostName(f Facts) Result {
	if len(f.OtherRegistrars) > 0 {
		return Result{Check: "host_name", Level: Fail,
			Why: fmt.Sprintf("HOST_NAME %q is also used by the registrar at %s", f.HostName, strings.Join(f.OtherRegistrars, ", ")),
			Fix: "give each host a unique HOST_NAME (cloned VMs keep /etc/hostname)"}
	}
	return Result{Check: "host_name", Level: OK, Why: fmt.Sprintf("HOST_NAME %q is used by this host only", f.HostName)}
}

// Leftovers reports the original tool's keys under our prefix.
func Leftovers(f Facts) Result {
	total := 0
	kinds := make([]string, 0, len(f.Leftovers))
	for k, n := range f.Leftovers {
		total += n
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	if total == 0 {
		return Result{Check: "original_tool_keys", Level: OK, Why: "none of the original tool's keys left"}
	}
	return Result{Check: "original_tool_keys", Level: Warn,
		Why: fmt.Sprintf("%d keys of the original bash tool: %s", total, strings.Join(kinds, " ")),
		Fix: "each host's registrar moves its own to _quarantine/ at start; the rest belong to hosts that no longer run it (see `status`), delete them with etcdctl"}
}

// Print writes the results, one aligned line each.
func Print(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rs {
		line := r.Why
		if r.Fix != "" {
			line += " — " + r.Fix
		}
		if _, err := fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Level, r.Check, line); err != nil {
			return fmt.Errorf("write doctor output: %w", err)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write doctor output: %w", err)
	}
	return nil
}
