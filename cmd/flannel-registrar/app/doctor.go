package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/doctor"
	"github.com/flannel-registrar/flannel-registrar/pkg/legacy"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/probe"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	dockerwatch "github.com/flannel-registrar/flannel-registrar/watchers/docker"
)

// ErrChecksFailed is returned by Doctor when a check failed (exit status 1).
var ErrChecksFailed = errors.New("doctor: a check failed")

// procSys is where the sysctls are read (a variable for tests).
var procSys = "/proc/sys/net/ipv4"

// Doctor gathers this host's facts, runs every check and prints one line
// each. It returns ErrChecksFailed when any check fails.
func (a *App) Doctor(ctx context.Context, w io.Writer) error {
	f := a.gatherFacts(ctx)
	rs := doctor.Run(f)
	if err := doctor.Print(w, rs); err != nil {
		return err
	}
	if doctor.Failed(rs) {
		return ErrChecksFailed
	}
	return nil
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (a *App) gatherFacts(ctx context.Context) doctor.Facts {
	f := doctor.Facts{VXLANIface: a.cfg.VXLANIface, HostName: a.cfg.HostName}
	if err := a.mgr.Runner(vxlan.Name).ReconcileNow(ctx, a.cfg.VXLANIface, "doctor"); err != nil {
		a.log.Debug("cannot read the VXLAN device", "error", err.Error())
	}
	link := a.store.Link()
	f.VXLANPresent, f.VXLANMTU = link.Present, link.MTU
	if link.Present {
		f.VXLANMAC = link.MAC.String()
	}
	f.IPForward, f.IPForwardErr = readSysctl(procSys + "/ip_forward")
	var errAll, errDev error
	f.RPFilterAll, errAll = readSysctl(procSys + "/conf/all/rp_filter")
	f.RPFilterDev, errDev = readSysctl(procSys + "/conf/" + a.cfg.VXLANIface + "/rp_filter")
	f.RPFilterErr = errors.Join(errAll, errDev)

	a.gatherDocker(ctx, &f)

	stop, err := a.listEtcd(ctx)
	if err != nil {
		f.EtcdErr = err
	} else {
		defer stop()
		a.gatherEtcd(ctx, &f, link)
	}
	a.gatherIPTables(&f)
	return f
}

func (a *App) gatherDocker(ctx context.Context, f *doctor.Facts) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := a.docker.ServerVersion(dctx)
	if err != nil {
		f.DockerErr = err
		return
	}
	f.DockerVersion = v.Version
	f.DirectRoutingMsg = forwarding.DirectRoutingWarning(v.Version, a.cfg.VXLANIface)
	nets, err := a.docker.NetworkList(dctx, network.ListOptions{})
	if err != nil {
		f.DockerErr = err
		return
	}
	f.BridgeMTUs = map[string]int{}
	for _, n := range nets {
		ln, _, ok := dockerwatch.Eligible(n)
		if !ok {
			continue
		}
		if l, err := a.nl.LinkByName(ln.Bridge); err == nil {
			f.BridgeMTUs[ln.Name] = l.Attrs().MTU
		}
	}
}

func (a *App) gatherEtcd(ctx context.Context, f *doctor.Facts, link state.Link) {
	ectx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	for _, ep := range a.cfg.EtcdEndpoints {
		st, err := a.etcd.Status(ectx, ep)
		if err == nil {
			f.EtcdVersion = st.Version
			break
		}
		f.EtcdErr = err
	}
	if f.EtcdVersion != "" {
		f.EtcdErr = nil
	}
	f.SelfPublicIP = overlay.PublicIPOf(a.cfg.PublicIP, link, a.store)
	for _, l := range a.store.Leases() {
		if l.IsVXLAN() {
			f.Leases = append(f.Leases, doctor.Lease{Subnet: l.Subnet, PublicIP: l.PublicIP, VtepMAC: l.VtepMAC.String()})
		}
	}
	for _, n := range a.store.Networks() {
		if n.Host == a.cfg.HostName {
			f.LocalRegistered++
		}
	}
	f.OtherRegistrars = a.otherRegistrars(ectx, f.SelfPublicIP)
	if los, err := legacy.Scan(ectx, a.etcd, a.keys()); err == nil {
		f.Leftovers = map[string]int{}
		for k, n := range legacy.Summary(los) {
			f.Leftovers[string(k)] = n
		}
	}
	f.Peers, f.PeersErr = a.doctorPeers(ctx, ectx, f)
}

// otherRegistrars lists PublicIPs of other live registrars using our name:
// the host record's, when it is not ours, and the liveness markers.
func (a *App) otherRegistrars(ctx context.Context, self netip.Addr) []string {
	var out []string
	seen := map[string]bool{}
	if h, ok := a.store.Host(a.cfg.HostName); ok && h.PublicIP != self.String() {
		seen[h.PublicIP] = true
		out = append(out, h.PublicIP)
	}
	resp, err := a.etcd.Get(ctx, a.keys().Registrars(a.cfg.HostName), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return out
	}
	for _, kv := range resp.Kvs {
		ip := strings.TrimPrefix(string(kv.Key), a.keys().Registrars(a.cfg.HostName))
		if ip != self.String() && !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	return out
}

// doctorPeers takes the running daemon's view (its status entry) when there
// is one (and f's counts of the peers it does not list), else probes every
// peer for a few seconds itself.
func (a *App) doctorPeers(ctx, ectx context.Context, f *doctor.Facts) ([]doctor.Peer, error) {
	resp, err := a.etcd.Get(ectx, a.keys().Status(a.cfg.HostName))
	if err == nil && len(resp.Kvs) == 1 {
		if hs, err := DecodeHostStatus(resp.Kvs[0].Value); err == nil {
			var out []doctor.Peer
			decided := true
			for _, p := range hs.Peers {
				dp := doctor.Peer{Name: p.Host, PublicIP: p.PublicIP, Probed: p.Reachable != nil}
				if p.Reachable != nil {
					dp.Reachable = *p.Reachable
				}
				decided = decided && dp.Probed
				out = append(out, dp)
			}
			for _, ip := range hs.ReachableOmitted {
				out = append(out, doctor.Peer{PublicIP: ip, Probed: true, Reachable: true})
			}
			o := hs.PeersOmitted
			if o != nil {
				decided = decided && o.Unknown == 0
			}
			if decided {
				if o != nil {
					f.UnlistedDown, f.UnlistedUnknown = o.Unreachable, o.Unknown
				}
				return out, nil
			}
			// The daemon has just started: probe here instead of waiting.
		}
	}
	targets := a.peerTargets()
	if len(targets) == 0 {
		return nil, nil
	}
	conn, err := probe.Listen()
	if err != nil {
		return nil, err
	}
	const interval, misses = 300 * time.Millisecond, 3
	p := probe.New(conn, probe.Options{Interval: interval, Misses: misses})
	p.SetTargets(targets)
	pctx, cancel := context.WithTimeout(ctx, interval*(misses+2))
	defer cancel()
	if err := p.Run(pctx); err != nil {
		return nil, err
	}
	var out []doctor.Peer
	for _, s := range p.States() {
		out = append(out, doctor.Peer{Name: s.Host, PublicIP: s.Key, Probed: s.Probed, Reachable: s.Reachable})
	}
	return out, nil
}

func (a *App) gatherIPTables(f *doctor.Facts) {
	ipt, err := forwarding.NewIPTables()
	if err != nil {
		f.IPTablesErr = err
		return
	}
	filter, err := ipt.ListTable("filter")
	if err != nil {
		f.IPTablesErr = err
		return
	}
	nat, err := ipt.ListTable("nat")
	if err != nil {
		f.IPTablesErr = err
		return
	}
	for _, l := range filter {
		switch {
		case strings.HasPrefix(l, "-P FORWARD "):
			f.ForwardPolicy = strings.TrimPrefix(l, "-P FORWARD ")
		case (strings.HasPrefix(l, "-A DOCKER-USER ") || strings.HasPrefix(l, "-A FORWARD ")) && strings.HasSuffix(l, "-j "+forwarding.FilterChain):
			f.FilterJumped = true
		}
	}
	for _, l := range nat {
		if strings.HasPrefix(l, "-A POSTROUTING ") && strings.HasSuffix(l, "-j "+forwarding.NATChain) {
			f.NATJumped = true
		}
	}
}
