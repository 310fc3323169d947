package app

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Diagnose lists the sources and prints what this host sees and what it
// would program, without changing anything.
func (a *App) Diagnose(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	wait := a.startSources(ctx)
	defer func() { cancel(); wait() }()
	if err := a.mgr.Runner("vxlan").ReconcileNow(ctx, a.cfg.VXLANIface, "diagnose"); err != nil {
		fmt.Fprintf(w, "VXLAN device %s: cannot read: %v\n", a.cfg.VXLANIface, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	syncErr := a.waitSynced(wctx)

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	l := a.store.Link()
	fmt.Fprintf(tw, "host\t%s\n", a.cfg.HostName)
	fmt.Fprintf(tw, "etcd\t%v (listed: %v)\n", a.cfg.EtcdEndpoints, a.store.Synced("etcd"))
	fmt.Fprintf(tw, "docker\tlisted: %v\n", a.store.Synced("docker"))
	if l.Present {
		fmt.Fprintf(tw, "vxlan\t%s mac %s local %s vni %d mtu %d up %v\n", l.Name, l.MAC, l.Local, l.VNI, l.MTU, l.Up)
	} else {
		fmt.Fprintf(tw, "vxlan\t%s absent (flanneld not running?)\n", a.cfg.VXLANIface)
	}
	if syncErr != nil {
		fmt.Fprintf(tw, "warning\tnot every source could be listed within 15s\n")
	}
	fmt.Fprintln(tw, "\nLOCAL NETWORK\tSUBNET\tBRIDGE\tREGISTERED")
	for _, n := range a.store.LocalNetworks() {
		_, ok := a.store.Network(a.keys().Network(a.cfg.HostName, n.Name))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", n.Name, n.Subnet, n.Bridge, ok)
	}
	fmt.Fprintln(tw, "\nRECORD HOST\tNETWORK\tSUBNET\tPUBLIC IP\tVTEP MAC")
	for _, n := range a.store.Networks() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Host, n.Network.Network, n.Subnet, n.PublicIP, n.VtepMAC)
	}
	fmt.Fprintln(tw, "\nFLANNEL LEASE\tBACKEND\tPUBLIC IP\tVTEP MAC")
	for _, le := range a.store.Leases() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", le.Subnet, le.Raw.BackendType, le.PublicIP, le.VtepMAC)
	}
	fmt.Fprintln(tw, "\nHOST\tPUBLIC IP\tVTEP MAC\tVERSION\tNETWORKS\tCONFLICTS")
	for _, h := range a.store.Hosts() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", h.Host, h.PublicIP, h.VtepMAC, h.Version, h.Networks, h.Conflicts)
	}
	for _, c := range a.subnets.Conflicts() {
		fmt.Fprintf(tw, "conflict\t%s %s: %s\n", c.Network, c.Subnet, c.Claimant)
	}
	for _, c := range a.routes.Conflicts() {
		fmt.Fprintf(tw, "conflict\t%s: %s %v\n", c.Prefix, c.Reason, c.Claimants)
	}
	return nil
}
