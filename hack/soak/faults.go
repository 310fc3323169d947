package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/vishvananda/netlink"
)

// How long the timed faults last.
const (
	etcdPauseFor    = 20 * time.Second
	etcdMemberDown  = 3 * time.Second
	registrarDown   = 2 * time.Second
	vxlanMissingFor = 2 * time.Second
	garbageFor      = 2 * time.Second
)

// garbageKey is a key under flannel's subnets that does not parse: every
// flanneld v0.27.4 drops all its peer routes, neighbours and FDB entries
// when it appears, and again when it is removed.
const garbageKey = lab.FlannelPrefix + "/subnets/garbage"

// The etcd member faults: one member of the lab's 3-member cluster
// SIGKILLed (data kept) and started again; the other two keep quorum.
func etcdMemberCount(l *lab.Lab) int { return l.EtcdMemberCount() }

func killEtcdMember(ctx context.Context, l *lab.Lab, i int) error { return l.KillEtcdMember(ctx, i) }

func startEtcdMember(ctx context.Context, l *lab.Lab, i int) error { return l.StartEtcdMember(ctx, i) }

// pauseEtcd and resumeEtcd freeze and thaw all of etcd (every member).
func pauseEtcd(l *lab.Lab) error  { return l.PauseEtcd() }
func resumeEtcd(l *lab.Lab) error { return l.ResumeEtcd() }

// inject applies f and undoes it (the timed faults wait meanwhile); it
// returns when the fault is over, i.e. when recovery can begin.
func (s *soak) inject(ctx context.Context, f Fault) error {
	l := s.l
	var h *lab.Host
	if f.Host > 0 {
		h = l.Host(f.Host)
	}
	switch f.Kind {
	case RegistrarKill:
		if err := h.Kill(ctx, lab.Registrar); err != nil {
			return err
		}
		sleepCtx(ctx, registrarDown)
		return h.Start(ctx, lab.Registrar)
	case FlanneldRestart:
		return h.Restart(ctx, lab.Flanneld)
	case DockerdRestart:
		return h.Restart(ctx, lab.Dockerd)
	case EtcdMemberKill:
		if err := killEtcdMember(ctx, l, f.Member); err != nil {
			return err
		}
		sleepCtx(ctx, etcdMemberDown)
		return startEtcdMember(ctx, l, f.Member)
	case EtcdPause:
		if err := pauseEtcd(l); err != nil {
			return err
		}
		sleepCtx(ctx, etcdPauseFor)
		return resumeEtcd(l)
	case VXLANDeleted:
		if _, err := h.Run(ctx, "ip", "link", "del", lab.VXLANDevice); err != nil {
			return err
		}
		// flanneld v0.27.4 does not recreate the device; restarting it does.
		sleepCtx(ctx, vxlanMissingFor)
		return h.Restart(ctx, lab.Flanneld)
	case GarbageKey:
		if err := s.etcdDo(ctx, func(ctx context.Context) error {
			_, err := s.check.cli.Put(ctx, garbageKey, "soak: not a lease")
			return err
		}); err != nil {
			return err
		}
		sleepCtx(ctx, garbageFor)
		return s.etcdDo(ctx, func(ctx context.Context) error {
			_, err := s.check.cli.Delete(ctx, garbageKey)
			return err
		})
	case KernelEntries:
		return deletePeerEntries(h, l.Host(f.Peer))
	case FirewallJump:
		return deleteJump(ctx, h)
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}

func (s *soak) etcdDo(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return f(ctx)
}

// deletePeerEntries deletes, on h's flannel.1, everything that leads to
// peer: its FDB entry, every neighbour with its VTEP MAC, and every route
// through one of those neighbours (ours and flannel's).
func deletePeerEntries(h, peer *lab.Host) error {
	phd, err := peer.Netlink()
	if err != nil {
		return err
	}
	defer phd.Close()
	plink, err := phd.LinkByName(lab.VXLANDevice)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", peer.Name, lab.VXLANDevice, err)
	}
	mac := plink.Attrs().HardwareAddr.String()

	hd, err := h.Netlink()
	if err != nil {
		return err
	}
	defer hd.Close()
	link, err := hd.LinkByName(lab.VXLANDevice)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", h.Name, lab.VXLANDevice, err)
	}
	idx := link.Attrs().Index
	neighs, err := hd.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("%s: neighbours: %w", h.Name, err)
	}
	gws := map[string]bool{}
	var victims []netlink.Neigh
	for _, n := range neighs {
		if n.HardwareAddr.String() == mac {
			gws[n.IP.String()] = true
			victims = append(victims, n)
		}
	}
	fdb, err := hd.NeighList(idx, syscall.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("%s: fdb: %w", h.Name, err)
	}
	routes, err := hd.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("%s: routes: %w", h.Name, err)
	}
	var errs []error
	n := 0
	for _, r := range routes {
		if r.Gw != nil && gws[r.Gw.String()] {
			if err := hd.RouteDel(&r); err != nil {
				errs = append(errs, fmt.Errorf("route del %s: %w", r.Dst, err))
			}
			n++
		}
	}
	for _, v := range victims {
		if err := hd.NeighDel(&v); err != nil {
			errs = append(errs, fmt.Errorf("neigh del %s: %w", v.IP, err))
		}
		n++
	}
	for _, e := range fdb {
		if e.HardwareAddr.String() == mac {
			if err := hd.NeighDel(&e); err != nil {
				errs = append(errs, fmt.Errorf("fdb del %s: %w", e.HardwareAddr, err))
			}
			n++
		}
	}
	if n == 0 {
		errs = append(errs, fmt.Errorf("%s: nothing on %s leads to %s (%s)", h.Name, lab.VXLANDevice, peer.Name, mac))
	}
	return errors.Join(errs...)
}

// deleteJump deletes, by hand, the DOCKER-USER rule that jumps to our
// filter chain (what an operator's `iptables -F DOCKER-USER` or a firewall
// reload does).
func deleteJump(ctx context.Context, h *lab.Host) error {
	out, err := h.Run(ctx, "iptables", "-t", "filter", "-S", forwarding.DockerUser)
	if err != nil {
		return err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, "-j "+forwarding.FilterChain) {
			continue
		}
		f[0] = "-D"
		if _, err := h.Run(ctx, append([]string{"iptables", "-t", "filter"}, f...)...); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no jump to %s in %s:\n%s", h.Name, forwarding.FilterChain, forwarding.DockerUser, out)
	}
	return nil
}
