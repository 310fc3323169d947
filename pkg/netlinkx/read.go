package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkByName returns the link called name; IsNotFound(err) when there is none.
func (h *Handle) LinkByName(name string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

// LinkByIndex returns the link with index i; IsNotFound(err) when there is none.
func (h *Handle) LinkByIndex(i int) (netlink.Link, error) {
	l, err := h.nl.LinkByIndex(i)
	if err != nil {
		return nil, fmt.Errorf("link #%d: %w", i, err)
	}
	return l, nil
}

// Links dumps every link.
func (h *Handle) Links() ([]netlink.Link, error) {
	return dump(h, "links", h.nl.LinkList)
}

// Routes dumps the IPv4 routes matching filter (see netlink.RT_FILTER_*).
// Without RT_FILTER_TABLE only the main table is listed.
func (h *Handle) Routes(filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return dump(h, "routes", func() ([]netlink.Route, error) {
		f := *filter // the library writes into a nil Dst filter
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, &f, mask)
	})
}

// RoutesTo returns the main table's IPv4 routes whose destination is
// exactly dst. It asks the kernel which FIB entry matches dst's network
// address (one request, as `ip route get fibmatch`) and dumps the table only
// when that answer does not settle it: a more specific route or another
// table answered, or the lookup failed. Among several routes to dst (other
// metrics or TOS) the lookup returns the preferred one.
func (h *Handle) RoutesTo(dst netip.Prefix) ([]netlink.Route, error) {
	rs, err := h.nl.RouteGetWithOptions(dst.Addr().AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	switch {
	case errors.Is(err, unix.ENETUNREACH):
		return nil, nil // nothing covers dst's address, so nothing is dst
	case err == nil && len(rs) == 1:
		got := Prefix(rs[0].Dst)
		mainOrAfter := rs[0].Table == unix.RT_TABLE_MAIN || rs[0].Table == unix.RT_TABLE_DEFAULT
		switch {
		case rs[0].Table == unix.RT_TABLE_MAIN && got == dst:
			return rs, nil
		case mainOrAfter && got.IsValid() && got.Bits() < dst.Bits():
			return nil, nil // main's longest match is shorter: main has no dst
		}
	}
	h.routeDumps.Add(1)
	return h.Routes(&netlink.Route{Dst: IPNet(dst), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
}

// Neighs dumps the IPv4 neighbours of link linkIndex.
func (h *Handle) Neighs(linkIndex int) ([]netlink.Neigh, error) {
	return dump(h, "neighbours", func() ([]netlink.Neigh, error) {
		return h.nl.NeighList(linkIndex, unix.AF_INET)
	})
}

// FDB dumps the bridge forwarding entries of link linkIndex.
func (h *Handle) FDB(linkIndex int) ([]netlink.Neigh, error) {
	return dump(h, "fdb", func() ([]netlink.Neigh, error) {
		return h.nl.NeighList(linkIndex, unix.AF_BRIDGE)
	})
}

// Neigh returns the IPv4 neighbour ip on link linkIndex (`ip neigh get`),
// or nil when there is none.
func (h *Handle) Neigh(linkIndex int, ip netip.Addr) (*netlink.Neigh, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: unix.AF_INET, Index: uint32(linkIndex)})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, ip.AsSlice()))
	n, err := h.getNeigh(req)
	if err != nil {
		return nil, fmt.Errorf("get neighbour %s: %w", ip, err)
	}
	return n, nil
}

// FDBEntry returns the device's own (self) FDB entry for mac on link
// linkIndex (`bridge fdb get MAC dev DEV self`), or nil when there is none.
// For a VXLAN device it carries the entry's first destination.
func (h *Handle) FDBEntry(linkIndex int, mac net.HardwareAddr) (*netlink.Neigh, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: uint32(linkIndex), Flags: netlink.NTF_SELF})
	req.AddData(nl.NewRtAttr(unix.NDA_LLADDR, mac))
	n, err := h.getNeigh(req)
	if err != nil {
		return nil, fmt.Errorf("get fdb entry %s: %w", mac, err)
	}
	return n, nil
}

func (h *Handle) getNeigh(req *nl.NetlinkRequest) (*netlink.Neigh, error) {
	req.Sockets = h.get
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	switch {
	case IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case len(msgs) != 1:
		return nil, fmt.Errorf("%d answers, expected 1", len(msgs))
	}
	return netlink.NeighDeserialize(msgs[0])
}

// Prefix converts a route destination; nil (the default route) is 0.0.0.0/0.
func Prefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// IPNet converts p for the netlink library.
func IPNet(p netip.Prefix) *net.IPNet {
	bits := p.Addr().BitLen()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// Addr converts ip; an invalid Addr when ip is nil or malformed.
func Addr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Addrs dumps every IPv4 address of every link.
func (h *Handle) Addrs() ([]netlink.Addr, error) {
	return dump(h, "addresses", func() ([]netlink.Addr, error) {
		return h.nl.AddrList(nil, netlink.FAMILY_V4)
	})
}

// RouteGet asks the kernel which route it would use to reach ip (as `ip
// route get`); ok false when ip is unreachable.
func (h *Handle) RouteGet(ip netip.Addr) (netlink.Route, bool, error) {
	rs, err := h.nl.RouteGet(ip.AsSlice())
	switch {
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return netlink.Route{}, false, nil
	case err != nil:
		return netlink.Route{}, false, fmt.Errorf("route get %s: %w", ip, err)
	case len(rs) == 0:
		return netlink.Route{}, false, nil
	}
	return rs[0], true, nil
}
