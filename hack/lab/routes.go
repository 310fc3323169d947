package lab

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Netlink returns a netlink handle bound to this host's namespace, for
// cheap repeated reads (route polling). The caller closes it.
func (h *Host) Netlink() (*netlink.Handle, error) {
	ns, err := netns.GetFromName(h.Netns)
	if err != nil {
		return nil, fmt.Errorf("host %s: open netns: %w", h.Name, err)
	}
	defer ns.Close()
	hd, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("host %s: netlink: %w", h.Name, err)
	}
	return hd, nil
}

// RouteTo returns the main-table route whose destination is exactly cidr
// on this host, or nil.
func RouteTo(hd *netlink.Handle, cidr string) (*netlink.Route, error) {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", cidr, err)
	}
	routes, err := hd.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Table: 254},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", cidr, err)
	}
	for i := range routes {
		if routes[i].Dst != nil && routes[i].Dst.String() == dst.String() {
			return &routes[i], nil
		}
	}
	return nil, nil
}

// HasRouteVia reports whether this host routes cidr through dev (the VXLAN
// device for remote networks).
func (h *Host) HasRouteVia(cidr, dev string) (bool, error) {
	hd, err := h.Netlink()
	if err != nil {
		return false, err
	}
	defer hd.Close()
	return routeVia(hd, cidr, dev)
}

func routeVia(hd *netlink.Handle, cidr, dev string) (bool, error) {
	r, err := RouteTo(hd, cidr)
	if err != nil || r == nil {
		return false, err
	}
	link, err := hd.LinkByIndex(r.LinkIndex)
	if err != nil {
		return false, fmt.Errorf("link of route to %s: %w", cidr, err)
	}
	return link.Attrs().Name == dev, nil
}

// RouteWatcher polls routes of one host through one netlink handle.
type RouteWatcher struct {
	Host *Host
	hd   *netlink.Handle
}

// NewRouteWatcher opens a netlink handle in h's namespace. Close it.
func (h *Host) NewRouteWatcher() (*RouteWatcher, error) {
	hd, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	return &RouteWatcher{Host: h, hd: hd}, nil
}

// Via reports whether cidr is routed through dev.
func (w *RouteWatcher) Via(cidr, dev string) (bool, error) { return routeVia(w.hd, cidr, dev) }

// Close releases the netlink handle.
func (w *RouteWatcher) Close() { w.hd.Close() }

// Run runs a command in this host's network namespace and returns its
// trimmed output (e.g. Run(ctx, "ip", "route")).
func (h *Host) Run(ctx context.Context, argv ...string) (string, error) {
	out, err := run(ctx, inNetns(h.Netns, argv...)...)
	return strings.TrimSpace(out), err
}

// NsenterCommand is the command prefix a user types to act in this host.
func (h *Host) NsenterCommand() string { return "nsenter --net=" + NetnsPath(h.Netns) }
