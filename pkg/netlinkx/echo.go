package netlinkx

import (
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// echoes remembers this handle's own successful writes until the kernel's
// notification of each arrives, so the netlink watcher can tell the echo of
// our own write from another actor's change: without it every route written
// comes back as an event and is reconciled a second time (10,000 extra
// reconciles on a cold start with 10,000 subnets). Only writes that changed
// the kernel are remembered (the controllers read before they write; a
// delete of something already gone is not), so an expectation rarely
// outlives its notification; the few that do can only swallow a later
// notification of the very same state, which needs no reconcile.
type echoes struct {
	mu sync.Mutex
	m  map[string]int
}

// maxEchoes bounds the memo (a lost notification, e.g. after ENOBUFS, is
// never taken); beyond it writes are not remembered and their echoes are
// reconciled as any change.
const maxEchoes = 1 << 16

func (e *echoes) expect(fp string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	if len(e.m) < maxEchoes {
		e.m[fp]++
	}
}

func (e *echoes) take(fp string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.m[fp]
	switch n {
	case 0:
		return false
	case 1:
		delete(e.m, fp)
	default:
		e.m[fp] = n - 1
	}
	return true
}

// reset forgets every expectation: after a lost subscription nothing can be
// matched anyway.
func (e *echoes) reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m = nil
}

func routeFP(del bool, r netlink.Route) string {
	return fmt.Sprintf("r%t|%s|%s|%d|%d", del, Prefix(r.Dst), Addr(r.Gw), r.LinkIndex, r.Protocol)
}

func neighFP(del bool, n netlink.Neigh) string {
	mac := n.HardwareAddr.String()
	if del && n.Family != unix.AF_BRIDGE {
		mac = "" // a deleted neighbour's notification carries no lladdr
	}
	return fmt.Sprintf("n%t|%d|%d|%s|%s", del, n.Family, n.LinkIndex, Addr(n.IP), mac)
}

// OwnRouteEcho says whether the route notification u is the echo of this
// handle's own write (and consumes it).
func (h *Handle) OwnRouteEcho(u netlink.RouteUpdate) bool {
	return h.echo.take(routeFP(u.Type == unix.RTM_DELROUTE, u.Route))
}

// OwnNeighEcho says whether the neighbour or FDB notification u is the echo
// of this handle's own write (and consumes it).
func (h *Handle) OwnNeighEcho(u netlink.NeighUpdate) bool {
	return h.echo.take(neighFP(u.Type == unix.RTM_DELNEIGH, u.Neigh))
}

// ForgetEchoes drops every remembered write (call after resubscribing).
func (h *Handle) ForgetEchoes() { h.echo.reset() }
