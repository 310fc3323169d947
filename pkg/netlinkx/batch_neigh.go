package netlinkx

// This file: neighbours and FDB entries set in batches (see batch.go).

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NeighSetAll creates or replaces the neighbours and FDB entries ns in
// order, as NeighSet does each, in few system calls, and returns each
// one's error (nil: done). An entry the batch does not encode (IPv6, a
// VLAN, a master device) is set on its own, in its place in the order.
func (h *Handle) NeighSetAll(ns []netlink.Neigh) []error {
	items := make([]batchItem, len(ns))
	for i := range ns {
		items[i] = neighItem{n: &ns[i], h: h}
	}
	return h.writeAll(items)
}

// neighItem is a set, or with del a delete (only ever written alone), of a
// neighbour or an FDB entry.
type neighItem struct {
	n   *netlink.Neigh
	del bool
	h   *Handle
}

func (n neighItem) batchable() bool {
	x := n.n
	return !n.del && x.IP.To4() != nil && x.LLIPAddr == nil && x.FlagsExt == 0 && x.Vlan == 0 && x.MasterIndex == 0 &&
		(x.Family == unix.AF_INET || x.Family == unix.AF_BRIDGE)
}

func (n neighItem) single() error {
	return n.h.writeOne(n, func(w *netlink.Handle) error {
		if n.del {
			return w.NeighDel(n.n)
		}
		return w.NeighSet(n.n)
	})
}

// fdb says whether n is an FDB entry: one netlink call serves both
// neighbours and, with AF_BRIDGE, FDB entries.
func (n neighItem) fdb() bool { return n.n.Family == unix.AF_BRIDGE }

func (n neighItem) sent() {
	verb := VerbNeighSet
	switch {
	case n.del && n.fdb():
		verb = VerbFDBDel
	case n.del:
		verb = VerbNeighDel
	case n.fdb():
		verb = VerbFDBSet
	}
	n.h.writes[verb].Add(1)
	n.h.echo.expect(neighFP(n.del, *n.n)) // before the write: the notification may come first
}

func (n neighItem) failed(err error) error {
	n.h.echo.take(neighFP(n.del, *n.n)) // nothing written, nothing notified
	if n.del && IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("%s: %w", n.describe(), err)
}

func (n neighItem) describe() string {
	verb, what := "set", "neighbour"
	if n.del {
		verb = "delete"
	}
	if n.fdb() {
		what = "fdb entry"
	}
	return verb + " " + what + " " + FormatNeigh(*n.n, "")
}

// encode appends the RTM_NEWNEIGH message of `ip neigh replace` (`bridge
// fdb replace`), as the library's NeighSet sends it.
func (n neighItem) encode(b []byte, seq uint32, ack bool) []byte {
	x := n.n
	b, start := beginMessage(b, unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq, ack)
	ne := binary.NativeEndian
	// struct ndmsg: family, two pad fields, ifindex, state, flags, type.
	b = append(b, uint8(x.Family), 0, 0, 0)
	b = ne.AppendUint32(b, uint32(x.LinkIndex))
	b = ne.AppendUint16(b, uint16(x.State))
	b = append(b, uint8(x.Flags), uint8(x.Type))
	b = appendAttr(b, unix.NDA_DST, x.IP.To4())
	if x.HardwareAddr != nil {
		b = appendAttr(b, unix.NDA_LLADDR, x.HardwareAddr)
	}
	if x.VNI != 0 {
		b = appendAttr(b, unix.NDA_VNI, ne.AppendUint32(nil, uint32(x.VNI)))
	}
	return endMessage(b, start)
}
