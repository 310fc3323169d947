package netlinkx

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteReplace creates r or replaces the route with r's key (table, dst,
// TOS, metric), like `ip route replace`.
func (h *Handle) RouteReplace(r *netlink.Route) error {
	h.writes[VerbRouteReplace].Add(1)
	h.echo.expect(routeFP(false, *r)) // before the write: the notification may come first
	if err := h.nl.RouteReplace(r); err != nil {
		h.echo.take(routeFP(false, *r))
		return fmt.Errorf("replace route %s: %w", FormatRoute(*r, ""), err)
	}
	return nil
}

// RouteDel deletes r; a route that is already gone is not an error.
func (h *Handle) RouteDel(r *netlink.Route) error {
	h.writes[VerbRouteDel].Add(1)
	h.echo.expect(routeFP(true, *r))
	if err := h.nl.RouteDel(r); err != nil {
		h.echo.take(routeFP(true, *r)) // nothing deleted, nothing notified
		if !IsNotFound(err) {
			return fmt.Errorf("delete route %s: %w", FormatRoute(*r, ""), err)
		}
	}
	return nil
}

// NeighSet creates or replaces a neighbour, or an FDB entry when n's family
// is AF_BRIDGE (`ip neigh replace`, `bridge fdb replace`).
func (h *Handle) NeighSet(n *netlink.Neigh) error {
	what := h.countNeigh(n, VerbNeighSet, VerbFDBSet)
	h.echo.expect(neighFP(false, *n))
	if err := h.nl.NeighSet(n); err != nil {
		h.echo.take(neighFP(false, *n))
		return fmt.Errorf("set %s %s: %w", what, FormatNeigh(*n, ""), err)
	}
	return nil
}

// NeighDel deletes a neighbour or, for AF_BRIDGE, an FDB entry; one that is
// already gone is not an error.
func (h *Handle) NeighDel(n *netlink.Neigh) error {
	what := h.countNeigh(n, VerbNeighDel, VerbFDBDel)
	h.echo.expect(neighFP(true, *n))
	if err := h.nl.NeighDel(n); err != nil {
		h.echo.take(neighFP(true, *n))
		if !IsNotFound(err) {
			return fmt.Errorf("delete %s %s: %w", what, FormatNeigh(*n, ""), err)
		}
	}
	return nil
}

// countNeigh counts a write of n under the verb of its kind (one netlink
// call serves both neighbours and, with AF_BRIDGE, FDB entries) and names
// that kind for errors.
func (h *Handle) countNeigh(n *netlink.Neigh, neigh, fdb Verb) string {
	if n.Family == unix.AF_BRIDGE {
		h.writes[fdb].Add(1)
		return "fdb entry"
	}
	h.writes[neigh].Add(1)
	return "neighbour"
}
