package routes

// This file: a destination's reconcile as a plan and its writes
// (reconcile.Planner), so that a cold start's routes go to the kernel in
// batches.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// plan is the writes of one destination (reconcile.Planner).
type plan struct {
	dst   netip.Prefix
	steps []Step
	wait  time.Duration // then look again (a sweep waits for its grace)
	// The names of the devices the steps name, for the change lines.
	link  state.Link
	links map[string]int
}

// Plan implements reconcile.Planner: it decides the destination key names
// against the kernel's routes to it and returns the writes that converge it.
func (c *Controller) Plan(_ context.Context, key string) (reconcile.Plan, error) {
	dst, err := ParseKey(key)
	if err != nil {
		return nil, nil // a malformed key never becomes valid: nothing to retry
	}
	in, err := c.input(dst)
	if err != nil {
		return nil, err
	}
	d, err := Decide(in)
	if err != nil {
		return nil, err
	}
	if d.Skip || (!c.trusted() && in.Gateway == nil && in.Extra == nil) {
		return nil, nil
	}
	var actual []netlink.Route
	if !c.absent.Take(dst) {
		if actual, err = c.h.RoutesTo(dst); err != nil {
			return nil, fmt.Errorf("read routes to %s: %w", dst, err)
		}
	}
	steps, held := Plan(d, actual, in.Link.Index)
	switch {
	case held != nil:
		c.report(dst, held)
	default:
		c.report(dst, d.Conflict)
	}
	steps, wait := c.settleSweeps(dst, d, steps)
	steps, wait = c.held(d, steps, wait)
	ready, err := c.gatewayReady(d, actual, in.Link.Index)
	if err != nil {
		return nil, err
	}
	if !ready {
		// Keep the working route until the fdb controller has set the new
		// gateway's neighbour (its neighbour event re-enqueues nothing here,
		// so look again shortly).
		return nil, reconcile.RequeueAfter(gatewayWait, "waiting for the neighbour of "+netlinkx.Addr(d.Want.Gw).String()+" before moving "+dst.String())
	}
	if len(steps) == 0 && wait == 0 {
		return nil, nil
	}
	return &plan{dst: dst, steps: steps, wait: wait, link: in.Link, links: in.Links}, nil
}

// Apply implements reconcile.Planner: the steps of every plan, in order,
// go to the kernel in one batch (netlinkx.Handle.RouteWriteAll).
func (c *Controller) Apply(ctxs []context.Context, plans []reconcile.Plan) []error {
	var ws []Step
	for _, p := range plans {
		ws = append(ws, p.(*plan).steps...)
	}
	werrs := c.h.RouteWriteAll(ws)
	out := make([]error, len(plans))
	n := 0
	for i, p := range plans {
		p := p.(*plan)
		var errs []error
		for _, s := range p.steps {
			if err := werrs[n]; err != nil {
				errs = append(errs, err)
			} else {
				verb := "route add "
				if s.Del {
					verb = "route del "
				}
				reconcile.Record(ctxs[i], verb+netlinkx.FormatRoute(s.Route, c.devName(s.Route.LinkIndex, p.link, p.links)))
			}
			n++
		}
		switch {
		case len(errs) > 0:
			out[i] = errors.Join(errs...)
		case p.wait > 0:
			out[i] = reconcile.RequeueAfter(p.wait, "confirming that nothing wants "+p.dst.String()+" any more")
		}
	}
	return out
}

func (c *Controller) devName(index int, link state.Link, links map[string]int) string {
	if index == 0 {
		return ""
	}
	if index == link.Index {
		return link.Name
	}
	for name, i := range links {
		if i == index {
			return name
		}
	}
	if l, err := c.h.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return ""
}
