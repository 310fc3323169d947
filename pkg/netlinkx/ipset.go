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
// their members (sorted). Other sets are not returned.
func (h *Handle) IPSetNets(prefix string) (map[string][]netip.Prefix, error) {
	res, err := h.nl.IpsetListAll()
	if err != nil {
		return nil, fmt.Errorf("list ipsets: %w", err)
	}
	// A big set comes in several messages with the same name; the type is
	// in the first one.
	out := map[string][]netip.Prefix{}
	types := map[string]string{}
	for _, r := range res {
		if !strings.HasPrefix(r.SetName, prefix) {
			continue
		}
		if r.TypeName != "" {
			types[r.SetName] = r.TypeName
		}
		members := out[r.SetName]
		for _, e := range r.Entries {
			a, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			bits := int(e.CIDR)
			if bits == 0 {
				bits = a.Unmap().BitLen()
			}
			if p, err := a.Unmap().Prefix(bits); err == nil {
				members = append(members, p)
			}
		}
		out[r.SetName] = members
	}
	for name, members := range out {
		if types[name] != IPSetTypeNet {
			delete(out, name)
			continue
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
