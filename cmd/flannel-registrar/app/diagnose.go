package app

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
)

// Diagnose lists the sources and prints what this host sees and what it
// would program, without changing anything.
func (a *App) Diagnose(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	wait := a.startSources(ctx)
	defer func() { cancel(); wait() }()
	out := &report{w: w}
	if err := a.mgr.Runner("vxlan").ReconcileNow(ctx, a.cfg.VXLANIface, "diagnose"); err != nil {
		out.printf("VXLAN device %s: cannot read: %v\n", a.cfg.VXLANIface, err)
	}
	if err := a.mgr.Runner("underlay").ReconcileNow(ctx, "underlay", "diagnose"); err != nil {
		out.printf("underlay: cannot read: %v\n", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	syncErr := a.waitSynced(wctx)
	a.classifyPending(ctx, false) // warn about invalid etcd items, as the daemon does; move nothing

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	out.w = tw
	a.printDiagnosis(out, syncErr)
	if err := tw.Flush(); out.err == nil {
		out.err = err
	}
	if out.err != nil {
		return fmt.Errorf("write diagnosis: %w", out.err)
	}
	return nil
}

func (a *App) printDiagnosis(out *report, syncErr error) {
	l := a.store.Link()
	out.printf("host\t%s\n", a.cfg.HostName)
	out.printf("etcd\t%v (listed: %v)\n", a.cfg.EtcdEndpoints, a.store.Synced("etcd"))
	out.printf("docker\tlisted: %v\n", a.store.Synced("docker"))
	if l.Present {
		out.printf("vxlan\t%s mac %s local %s vni %d mtu %d up %v\n", l.Name, l.MAC, l.Local, l.VNI, l.MTU, l.Up)
	} else {
		out.printf("vxlan\t%s absent (flanneld not running?)\n", a.cfg.VXLANIface)
	}
	if syncErr != nil {
		out.printf("warning\tnot every source could be listed within 15s\n")
	}
	out.printf("\nLOCAL NETWORK\tSUBNET\tBRIDGE\tREGISTERED\tGROUPS\n")
	for _, n := range a.store.LocalNetworks() {
		_, ok := a.store.Network(a.keys().Network(a.cfg.HostName, n.Name))
		out.printf("%s\t%s\t%s\t%v\t%s\n", n.Name, n.Subnet, n.Bridge, ok, groupList(n.Groups))
	}
	out.printf("\nRECORD HOST\tNETWORK\tSUBNET\tPUBLIC IP\tVTEP MAC\tGROUPS\n")
	for _, n := range a.store.Networks() {
		out.printf("%s\t%s\t%s\t%s\t%s\t%s\n", n.Host, n.Network.Network, n.Subnet, n.PublicIP, n.VtepMAC, groupList(n.Groups))
	}
	a.printGroups(out)
	out.printf("\nFLANNEL LEASE\tBACKEND\tPUBLIC IP\tVTEP MAC\n")
	for _, le := range a.store.Leases() {
		out.printf("%s\t%s\t%s\t%s\n", le.Subnet, le.Raw.BackendType, le.PublicIP, le.VtepMAC)
	}
	out.printf("\nHOST\tPUBLIC IP\tVTEP MAC\tVERSION\tNETWORKS\tCONFLICTS\n")
	for _, h := range a.store.Hosts() {
		out.printf("%s\t%s\t%s\t%s\t%d\t%d\n", h.Host, h.PublicIP, h.VtepMAC, h.Version, h.Networks, h.Conflicts)
	}
	for _, c := range a.subnets.Conflicts() {
		out.printf("conflict\t%s %s: %s\n", c.Network, c.Subnet, c.Claimant)
	}
	for _, c := range a.routes.Conflicts() {
		out.printf("conflict\t%s: %s %v\n", c.Prefix, c.Reason, c.Claimants)
	}
	a.printPolicy(out)
}

// printGroups lists the isolation groups of this host's networks: the set
// that enforces each, the members it should hold, and the packets dropped
// into the group so far (iptables counters, read now).
func (a *App) printGroups(out *report) {
	want := a.fwd.Want()
	if len(want.Sets) == 0 {
		return
	}
	drops, err := a.fwd.GroupDrops()
	out.printf("\nGROUP\tIPSET\tMEMBERS\tDROPPED PACKETS\n")
	members := want.GroupMembers()
	groups := make([]string, 0, len(members))
	for g := range members {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		ps := make([]string, len(members[g]))
		for i, p := range members[g] {
			ps[i] = p.String()
		}
		dropped := "?"
		if err == nil {
			dropped = strconv.FormatUint(drops[g].Packets, 10)
		}
		out.printf("%s\t%s\t%s\t%s\n", g, forwarding.SetName(g), strings.Join(ps, ","), dropped)
	}
	if err != nil {
		out.printf("warning\tgroup drop counters: %v\n", err)
	}
}

func groupList(g []string) string {
	if len(g) == 0 {
		return "-"
	}
	return strings.Join(g, ",")
}

// report keeps the first write error so that the listing reads straight
// through and the failure is returned once, at the end.
type report struct {
	w   io.Writer
	err error
}

func (r *report) printf(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, format, args...)
	}
}

// printPolicy lists the trust boundary's facts and what it refuses.
func (a *App) printPolicy(out *report) {
	u := a.store.Underlay()
	facts := a.store.Facts()
	out.printf("\npolicy\tallowed %v, min prefix /%d\n", a.policy().AllowedRanges(facts), a.cfg.MinPrefixLen)
	out.printf("underlay\taddresses %v connected %v gateways %v etcd path %v peers via gateways %v (observed: %v)\n",
		u.Addrs, u.Routes, u.Gateways, u.Etcd, u.Peers, u.Observed)
	byRule := map[string]int{}
	for name, r := range a.subnets.Refused() {
		byRule[r.Rule]++
		out.printf("refused\tlocal network %s %s (%s): %s\n", name, r.Subnet, r.Rule, r.Detail)
	}
	for _, c := range a.routes.Refused() {
		byRule[c.Rule]++
		out.printf("refused\t%s (%s): %s %v\n", c.Prefix, c.Rule, c.Reason, c.Claimants)
	}
	if len(byRule) > 0 {
		out.printf("refusals\t%v\n", byRule)
	}
}
