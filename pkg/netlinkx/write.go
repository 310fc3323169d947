package netlinkx

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteReplace creates r or replaces the route with r's key (table, dst,
// TOS, metric), like `ip route replace`.
func (h *Handle) RouteReplace(r *netlink.Route) error {
	return routeItem{w: &RouteWrite{Route: *r}, h: h}.single()
}

// RouteDel deletes r; a route that is already gone is not an error.
func (h *Handle) RouteDel(r *netlink.Route) error {
	return routeItem{w: &RouteWrite{Del: true, Route: *r}, h: h}.single()
}

// NeighSet creates or replaces a neighbour, or an FDB entry when n's family
// is AF_BRIDGE (`ip neigh replace`, `bridge fdb replace`).
func (h *Handle) NeighSet(n *netlink.Neigh) error {
	return neighItem{n: n, h: h}.single()
}

// NeighDel deletes a neighbour or, for AF_BRIDGE, an FDB entry; one that is
// already gone is not an error.
func (h *Handle) NeighDel(n *netlink.Neigh) error {
	return neighItem{n: n, del: true, h: h}.single()
}

// writeOne makes the write it on its own, through f on a write socket,
// with what a write of a batch has too: its counter, its echo, its error.
func (h *Handle) writeOne(it batchItem, f func(*netlink.Handle) error) error {
	it.sent()
	if err := h.writer(f); err != nil {
		return it.failed(err)
	}
	return nil
}

// numWriters is how many sockets writes go through. Through one, the
// library's lock on it queued every kernel writer (routes, fdb: two workers
// each) behind the one in the kernel, and each waiter then waited to be
// scheduled again (0.85 s of scheduling delay in a cold start of 10,000
// records, go tool trace); with a socket each, the next write is ready
// when the kernel's own lock frees.
const numWriters = 4

func (h *Handle) openWriters(ns netns.NsHandle) error {
	h.writers = make(chan *netlink.Handle, numWriters)
	h.done = make(chan struct{})
	for range numWriters {
		w, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE) // routes, neighbours, FDB: one socket
		if err != nil {
			return fmt.Errorf("netlink handle: %w", err)
		}
		h.writers <- w
	}
	return nil
}

// closeWriters stops the writes: a write waiting for a socket, or asking
// for one later, fails with errClosed. That matters: a closed vishvananda
// handle does not fail, it opens a socket in the calling thread's
// namespace. The free sockets are closed here, one in use when it is
// handed back.
func (h *Handle) closeWriters() {
	if h.writers == nil {
		return
	}
	h.closeOnce.Do(func() { close(h.done) })
	for range numWriters {
		select {
		case w := <-h.writers:
			w.Close()
		default: // in use, or never opened
		}
	}
}

// errClosed is a write's error after Close.
var errClosed = errors.New("netlink handle closed")

// writer runs f on a free write socket.
func (h *Handle) writer(f func(*netlink.Handle) error) error {
	var w *netlink.Handle
	select {
	case w = <-h.writers:
	case <-h.done:
		return errClosed
	}
	defer func() {
		select {
		case <-h.done:
			w.Close() // Close ran meanwhile
		default:
			h.writers <- w
		}
	}()
	select {
	case <-h.done: // both were ready and the socket won the draw
		return errClosed
	default:
	}
	return f(w)
}
