package fdb

// This file: the keys of a resync, and what the start resync's dumps tell
// the first reconciles of a cold start.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
)

// Keys returns every wanted VTEP MAC and every MAC of a flannel-shaped FDB
// entry or permanent neighbour on the device (dumped; this also refreshes
// the sweep candidates). Listed for the start resync (reconcile.IsStart),
// the dumps also tell which wanted entries are missing: their first
// reconcile skips its lookups.
func (c *Controller) Keys(ctx context.Context) ([]string, error) {
	start := reconcile.IsStart(ctx)
	if start {
		c.absentFDB.Begin()
		c.absentNeigh.Begin()
	}
	p := c.desired()
	keys := make([]string, 0, len(p.l2.FDB))
	for mac := range p.l2.FDB {
		keys = append(keys, mac)
	}
	if !p.link.Present || p.link.Index <= 0 {
		if start {
			c.DropDump()
		}
		slices.Sort(keys)
		return keys, nil
	}
	var errs []error
	fdb, err := c.h.FDB(p.link.Index)
	errs = append(errs, err)
	var absentFDB map[string]struct{}
	if start && err == nil {
		absentFDB = make(map[string]struct{}, len(p.l2.FDB))
		for mac := range p.l2.FDB {
			absentFDB[mac] = struct{}{}
		}
	}
	for _, n := range fdb {
		if n.LinkIndex != p.link.Index {
			continue
		}
		delete(absentFDB, n.HardwareAddr.String()) // any entry: FDBEntry would find it
		if flannelFDB(n) {
			keys = append(keys, n.HardwareAddr.String())
		}
	}
	neighs, err := c.h.Neighs(p.link.Index)
	errs = append(errs, err)
	var absentNeigh map[netip.Addr]struct{}
	if start && err == nil {
		absentNeigh = make(map[netip.Addr]struct{}, len(p.l2.Neigh))
		for ip := range p.l2.Neigh {
			absentNeigh[ip] = struct{}{}
		}
	}
	for _, n := range neighs {
		if n.LinkIndex != p.link.Index {
			continue
		}
		ip := netlinkx.Addr(n.IP)
		delete(absentNeigh, ip)
		if permanentNeigh(n) {
			keys = append(keys, n.HardwareAddr.String())
			if ip.IsValid() {
				c.remember(n.HardwareAddr, ip)
			}
		}
	}
	if start {
		c.absentFDB.Set(absentFDB) // nil after a failed dump: nothing known
		c.absentNeigh.Set(absentNeigh)
	}
	slices.Sort(keys)
	return slices.Compact(keys), errors.Join(errs...)
}

// KernelChanged hears of a kernel change of the FDB entry of a MAC or of
// the neighbour at an address (the netlink watcher's key): it is looked up
// again, whatever the start dump said.
func (c *Controller) KernelChanged(key string) {
	if mac, err := net.ParseMAC(key); err == nil {
		c.absentFDB.Forget(mac.String())
		return
	}
	if ip, err := netip.ParseAddr(key); err == nil {
		c.absentNeigh.Forget(ip)
	}
}

// Converged implements reconcile.Converger: the start-up pass is over.
func (c *Controller) Converged() { c.DropDump() }

// DropDump forgets what the start dumps said: kernel notifications may
// have been lost.
func (c *Controller) DropDump() {
	c.absentFDB.Drop()
	c.absentNeigh.Drop()
}
