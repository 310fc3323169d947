package fdb

// This file: a VTEP's reconcile as a plan and its writes
// (reconcile.Planner), so that a cold start's neighbours and FDB entries go
// to the kernel in batches.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
)

// writes is the plan of one VTEP: what it must write.
type writes struct {
	mac net.HardwareAddr
	// whole, when set: converging the VTEP may delete something (a
	// neighbour it no longer owns, its FDB entry): Apply converges it from
	// this desired state as Reconcile always did, reading and writing in
	// turn (converge).
	whole *vtepPlan
	sets  []netlink.Neigh // the FDB entry, then the neighbours, to set
	dev   string
	errs  []error // reads that failed: those entries are not planned
}

// Plan implements reconcile.Planner: the entries of the VTEP MAC key that
// are not in place. A VTEP that may have something to delete is planned
// whole (see writes.whole).
func (c *Controller) Plan(_ context.Context, key string) (reconcile.Plan, error) {
	mac, err := net.ParseMAC(key)
	if err != nil || len(mac) != 6 {
		return nil, nil // a malformed key never becomes valid: nothing to retry
	}
	p := c.vtep(mac.String())
	if !p.link.Present || p.link.Index <= 0 || !p.self.Known() || !p.trusted {
		return nil, nil // no device, identity or underlay yet: their events enqueue every key
	}
	key = mac.String()
	if c.sweeps(p, key) {
		return &writes{mac: mac, whole: p}, nil
	}
	// What converge clears when it finds nothing to sweep.
	c.settle.Clear("fdb " + key)
	for _, ip := range p.neighs {
		c.settle.Clear("neigh " + ip.String())
	}
	out := &writes{mac: mac, dev: p.link.Name}
	// Add before delete, so a VTEP whose entries move is never left without one.
	if p.hasFDB {
		n, err := c.fdbToSet(p.link.Index, mac, p.dst)
		out.add(n, err)
	}
	for _, ip := range p.neighs {
		n, err := c.neighToSet(p.link.Index, mac, ip)
		out.add(n, err)
	}
	if len(out.sets) == 0 && len(out.errs) == 0 {
		return nil, nil
	}
	return out, nil
}

func (p *writes) add(n *netlink.Neigh, err error) {
	switch {
	case err != nil:
		p.errs = append(p.errs, err)
	case n != nil:
		p.sets = append(p.sets, *n)
	}
}

// sweeps says whether converging p may delete something: a neighbour last
// seen with the VTEP's MAC that it does not own, or, with no FDB entry
// wanted, the entry.
func (c *Controller) sweeps(p *vtepPlan, key string) bool {
	if !p.hasFDB && (p.sweep || c.ownsFDB(key)) {
		return true
	}
	return slices.ContainsFunc(c.candidates(key), func(ip netip.Addr) bool { return !slices.Contains(p.neighs, ip) })
}

// Apply implements reconcile.Planner: the sets of every plan, in order,
// go to the kernel in batches (netlinkx.Handle.NeighSetAll); a whole plan
// is converged in its place.
func (c *Controller) Apply(ctxs []context.Context, plans []reconcile.Plan) []error {
	errs := make([][]error, len(plans))
	out := make([]error, len(plans))
	var ns []netlink.Neigh
	var owner []int // the plan of each entry in ns
	flush := func() {
		for k, err := range c.h.NeighSetAll(ns) {
			i := owner[k]
			if err != nil {
				errs[i] = append(errs[i], err)
				continue
			}
			reconcile.Record(ctxs[i], changeLine(ns[k], plans[i].(*writes).dev))
		}
		ns, owner = ns[:0], owner[:0]
	}
	for i, p := range plans {
		p := p.(*writes)
		if p.whole != nil {
			flush()
			out[i] = c.converge(ctxs[i], p.mac, p.whole) // may ask to look again later (RequeueError)
			continue
		}
		errs[i] = append(errs[i], p.errs...)
		for _, n := range p.sets {
			ns, owner = append(ns, n), append(owner, i)
		}
	}
	flush()
	for i := range errs {
		if len(errs[i]) > 0 {
			out[i] = errors.Join(errs[i]...)
		}
	}
	return out
}
