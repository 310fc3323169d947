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

// Keys returns every VTEP MAC a record or vxlan lease names and every MAC
// of a flannel-shaped FDB entry or permanent neighbour on the device
// (dumped; this also refreshes the sweep candidates). Which VTEPs are
// wanted is each key's reconcile's to decide: resolving every VTEP here as
// well cost a tenth of a second of a cold start at 10,000 leases, before
// the first write. Listed for the start resync (reconcile.IsStart), the
// dumps also tell which entries are missing: the first reconciles skip
// their lookups of those.
func (c *Controller) Keys(ctx context.Context) ([]string, error) {
	start := reconcile.IsStart(ctx)
	if start {
		c.absentFDB.Begin()
		c.absentNeigh.Begin()
	}
	keys := c.store.VTEPMACs()
	link := c.store.Link()
	if !link.Present || link.Index <= 0 {
		if start {
			c.DropDump()
		}
		return keys, nil
	}
	var errs []error
	fdb, err := c.h.FDB(link.Index)
	errs = append(errs, err)
	var absentFDB map[string]struct{}
	if start && err == nil {
		// Every MAC a claim names: one that turns out unwanted is never
		// looked up (nor written).
		absentFDB = make(map[string]struct{}, len(keys))
		for _, mac := range keys {
			absentFDB[mac] = struct{}{}
		}
	}
	for _, n := range fdb {
		if n.LinkIndex != link.Index {
			continue
		}
		delete(absentFDB, n.HardwareAddr.String()) // any entry: FDBEntry would find it
		if flannelFDB(n) {
			keys = append(keys, n.HardwareAddr.String())
		}
	}
	neighs, err := c.h.Neighs(link.Index)
	errs = append(errs, err)
	var absentNeigh map[netip.Addr]struct{}
	if start && err == nil {
		// A neighbour's address is a claimed subnet's (a lease's own, or
		// the lowest record subnet of a VTEP, see overlay.RecordVia).
		subs := c.store.Subnets()
		absentNeigh = make(map[netip.Addr]struct{}, len(subs))
		for _, p := range subs {
			absentNeigh[p.Addr()] = struct{}{}
		}
	}
	for _, n := range neighs {
		if n.LinkIndex != link.Index {
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
