package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// IPSetTypeNet is the ipset type of the sets we make: IPv4 networks.
const IPSetTypeNet = "hash:net"

// hashNetRevision is the kernel's hash:net revision 0..7 we ask for: 6 has
// everything we need (nets, counters off, no comments) and is in every
// kernel since 4.x; the library has no default for hash:net.
const hashNetRevision = 6

// IPSetNets lists the IPv4 hash:net sets whose names start with prefix, with
// their members (sorted). Other sets are not returned, and not even read:
// the names come from a names-only dump, then only matching sets are listed
// (the library logs every attribute it does not know, and other tools' sets
// have some).
func (h *Handle) IPSetNets(prefix string) (map[string][]netip.Prefix, error) {
	names, err := h.ipsetNames()
	if err != nil {
		return nil, err
	}
	out := map[string][]netip.Prefix{}
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		r, err := h.nl.IpsetList(name)
		if IsNotFound(err) {
			continue // destroyed since the dump
		}
		if err != nil {
			return nil, fmt.Errorf("list ipset %s: %w", name, err)
		}
		if r.TypeName != IPSetTypeNet {
			continue
		}
		members := []netip.Prefix{}
		for _, e := range r.Entries {
			a, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			a = a.Unmap()
			bits := int(e.CIDR)
			if bits == 0 {
				bits = a.BitLen()
			}
			if p, err := a.Prefix(bits); err == nil {
				members = append(members, p)
			}
		}
		slices.SortFunc(members, func(a, b netip.Prefix) int {
			if c := a.Addr().Compare(b.Addr()); c != 0 {
				return c
			}
			return a.Bits() - b.Bits()
		})
		out[name] = members
	}
	return out, nil
}

// ipsetNames dumps the names of all sets (IPSET_FLAG_LIST_SETNAME: the
// kernel sends nothing else).
func (h *Handle) ipsetNames() ([]string, error) {
	s, ok := h.get[unix.NETLINK_NETFILTER]
	if !ok {
		return nil, fmt.Errorf("list ipsets: no netfilter netlink socket")
	}
	req := nl.NewNetlinkRequest(nl.IPSET_CMD_LIST|(unix.NFNL_SUBSYS_IPSET<<8), nl.GetIpsetFlags(nl.IPSET_CMD_LIST))
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: s}
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(unix.AF_NETLINK), Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_FLAGS | nl.NLA_F_NET_BYTEORDER, Value: ipsetFlagListSetname})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return nil, fmt.Errorf("list ipset names: %w", err)
	}
	var names []string
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		for a := range nl.ParseAttributes(m[nl.SizeofNfgenmsg:]) {
			if a.Type == nl.IPSET_ATTR_SETNAME {
				names = append(names, nl.BytesToString(a.Value))
			}
		}
	}
	return names, nil
}

// ipsetFlagListSetname is IPSET_FLAG_LIST_SETNAME (linux/netfilter/ipset/
// ip_set.h: 1 << IPSET_FLAG_BIT_LIST_SETNAME, bit 1), not in the library.
const ipsetFlagListSetname = 1 << 1

// IPSetCreateNet creates an IPv4 hash:net set; one that exists is done.
func (h *Handle) IPSetCreateNet(name string) error {
	err := h.nl.IpsetCreate(name, IPSetTypeNet, netlink.IpsetCreateOptions{Family: unix.AF_INET, Revision: hashNetRevision})
	if err != nil && !ipsetExists(err) {
		return fmt.Errorf("ipset create %s %s: %w", name, IPSetTypeNet, err)
	}
	return nil
}

// IPSetAdd adds p to set name; a member already there is done.
func (h *Handle) IPSetAdd(name string, p netip.Prefix) error {
	if err := h.nl.IpsetAdd(name, ipsetEntry(p)); err != nil && !ipsetExists(err) {
		return fmt.Errorf("ipset add %s %s: %w", name, p, err)
	}
	return nil
}

// IPSetDel deletes p from set name; a member (or set) already gone is done.
func (h *Handle) IPSetDel(name string, p netip.Prefix) error {
	// The kernel says IPSET_ERR_EXIST for "not a member" too.
	if err := h.nl.IpsetDel(name, ipsetEntry(p)); err != nil && !ipsetExists(err) && !IsNotFound(err) {
		return fmt.Errorf("ipset del %s %s: %w", name, p, err)
	}
	return nil
}

// IPSetDestroy destroys set name; a set already gone is done. A set still
// used by an iptables rule cannot be destroyed (IPSET_ERR_BUSY, "in use").
func (h *Handle) IPSetDestroy(name string) error {
	if err := h.nl.IpsetDestroy(name); err != nil && !IsNotFound(err) {
		if errors.Is(err, nl.IPSetError(nl.IPSET_ERR_BUSY)) || errors.Is(err, nl.IPSetError(nl.IPSET_ERR_REFERENCED)) {
			return fmt.Errorf("ipset destroy %s: set in use (an iptables rule references it): %w", name, err)
		}
		return fmt.Errorf("ipset destroy %s: %w", name, err)
	}
	return nil
}

func ipsetEntry(p netip.Prefix) *netlink.IPSetEntry {
	return &netlink.IPSetEntry{IP: net.IP(p.Addr().AsSlice()), CIDR: uint8(p.Bits())}
}

func ipsetExists(err error) bool {
	return errors.Is(err, nl.IPSetError(nl.IPSET_ERR_EXIST)) || errors.Is(err, unix.EEXIST)
}
