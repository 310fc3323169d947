package netlinkx

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteWrite is one route write of a batch: a replace (`ip route
// replace`), or with Del a delete (a route already gone is no error).
type RouteWrite struct {
	Del   bool
	Route netlink.Route
}

// batchMax is how many writes one system call carries. The kernel runs
// them back to back and acknowledges only the last one (and any that
// failed): at 10,000 routes 40 calls instead of 20,000 sends and
// receives, and the daemon's other threads are woken by the kernel's
// notifications once a batch rather than once a route. Its errors stay
// far below the socket's receive buffer (batchRcvBuf) even when all fail.
const batchMax = 256

// batchRcvBuf is the batch socket's receive buffer: room for batchMax
// error messages, each quoting its request.
const batchRcvBuf = 1 << 20

// batcher is the socket route batches are written through, opened on
// first use.
type batcher struct {
	mu  sync.Mutex // one batch at a time
	s   *nl.NetlinkSocket
	seq uint32
	buf []byte
}

// RouteWriteAll makes the writes ws in order, in few system calls, and
// returns each one's error (nil: done), as RouteReplace and RouteDel
// would. A route of a shape the batch does not encode (multipath,
// encapsulation, metrics) is written on its own, in its place in the order.
func (h *Handle) RouteWriteAll(ws []RouteWrite) []error {
	items := make([]batchItem, len(ws))
	for i := range ws {
		items[i] = routeItem{w: &ws[i], h: h}
	}
	return h.writeAll(items)
}

// batchItem is one write of a batch.
type batchItem interface {
	batchable() bool
	single() error                                // the write on its own (not batchable)
	encode(b []byte, seq uint32, ack bool) []byte // its netlink message
	sent()                                        // counted, and its echo expected
	failed(err error) error                       // the error of a sent write (nil: none after all)
	describe() string                             // what the write is, for errors
}

// writeAll makes the writes items in order: runs of batchable ones up to
// batchMax a system call, the others on their own.
func (h *Handle) writeAll(items []batchItem) []error {
	errs := make([]error, len(items))
	h.batch.mu.Lock()
	defer h.batch.mu.Unlock()
	var pending []int // indexes of items in the batch being built
	flush := func() {
		if len(pending) > 0 {
			h.sendBatch(items, pending, errs)
			pending = pending[:0]
		}
	}
	for i, it := range items {
		if !it.batchable() {
			flush()
			errs[i] = it.single()
			continue
		}
		pending = append(pending, i)
		if len(pending) == batchMax {
			flush()
		}
	}
	flush()
	return errs
}

type routeItem struct {
	w *RouteWrite
	h *Handle
}

func (r routeItem) batchable() bool { return batchable(r.w.Route) }

func (r routeItem) single() error {
	if r.w.Del {
		return r.h.RouteDel(&r.w.Route)
	}
	return r.h.RouteReplace(&r.w.Route)
}

func (r routeItem) encode(b []byte, seq uint32, ack bool) []byte {
	return routeMessage(b, r.w, seq, ack)
}

func (r routeItem) sent() {
	if r.w.Del {
		r.h.writes[VerbRouteDel].Add(1)
	} else {
		r.h.writes[VerbRouteReplace].Add(1)
	}
	r.h.echo.expect(routeFP(r.w.Del, r.w.Route)) // before the write: the notification may come first
}

func (r routeItem) failed(err error) error {
	r.h.echo.take(routeFP(r.w.Del, r.w.Route)) // nothing written, nothing notified
	if r.w.Del && IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("%s: %w", r.describe(), err)
}

func (r routeItem) describe() string {
	if r.w.Del {
		return "delete route " + FormatRoute(r.w.Route, "")
	}
	return "replace route " + FormatRoute(r.w.Route, "")
}

// batchable says whether r has only what routeMessage encodes.
func batchable(r netlink.Route) bool {
	return r.Dst != nil && r.Dst.IP.To4() != nil && len(r.Dst.IP.To4()) == net.IPv4len &&
		(r.Gw == nil || r.Gw.To4() != nil) && (r.Src == nil || r.Src.To4() != nil) &&
		len(r.MultiPath) == 0 && r.Encap == nil && r.NewDst == nil && r.Via == nil && r.MPLSDst == nil &&
		r.ILinkIndex == 0 && r.MTU == 0 && r.AdvMSS == 0 && r.Hoplimit == 0 && r.Realm == 0 &&
		r.Window == 0 && r.Rtt == 0 && r.RttVar == 0 && r.Ssthresh == 0 && r.Cwnd == 0 &&
		r.Reordering == 0 && r.InitCwnd == 0 && r.Features == 0 && r.RtoMin == 0 && r.InitRwnd == 0 &&
		r.QuickACK == 0 && r.Congctl == "" && r.FastOpenNoCookie == 0 && r.Type <= unix.RTN_UNICAST
}

// sendBatch writes items[pending] in one message train and sets their
// errors.
func (h *Handle) sendBatch(items []batchItem, pending []int, errs []error) {
	b := &h.batch
	fail := func(err error) { // nothing sent
		for _, i := range pending {
			errs[i] = fmt.Errorf("%s: %w", items[i].describe(), err)
		}
	}
	select {
	case <-h.done:
		fail(errClosed)
		return
	default:
	}
	if b.s == nil {
		s, err := openBatchSocket(h.ns)
		if err != nil {
			fail(err)
			return
		}
		b.s = s
	}
	b.buf = b.buf[:0]
	first := b.seq + 1
	for n, i := range pending {
		b.seq++
		b.buf = items[i].encode(b.buf, b.seq, n == len(pending)-1)
		items[i].sent()
	}
	failed := h.exchange(b, first, len(pending))
	for n, i := range pending {
		if err := failed(first + uint32(n)); err != nil {
			errs[i] = items[i].failed(err)
		}
	}
}

// exchange sends the batch in b.buf (sequence numbers first..first+n-1,
// the last one acknowledged) and reads the answers up to that
// acknowledgement. It returns each sequence number's error.
func (h *Handle) exchange(b *batcher, first uint32, n int) func(seq uint32) error {
	last := first + uint32(n) - 1
	all := func(err error) func(uint32) error { return func(uint32) error { return err } }
	if err := unix.Sendto(b.s.GetFd(), b.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return all(err)
	}
	failed := map[uint32]error{}
	for {
		msgs, _, err := b.s.Receive()
		if err != nil {
			// Which writes were made is unknown: all count as failed and
			// are tried again (each is idempotent).
			return all(fmt.Errorf("read the batch's answers: %w", err))
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq < first || m.Header.Seq > last || len(m.Data) < 4 {
				continue
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data[:4])); e != 0 {
				failed[m.Header.Seq] = syscall.Errno(-e)
			}
			if m.Header.Seq == last {
				return func(seq uint32) error { return failed[seq] }
			}
		}
	}
}

func openBatchSocket(ns netns.NsHandle) (*nl.NetlinkSocket, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_SOCKET, unix.SO_RCVBUF, batchRcvBuf); err != nil {
		s.Close()
		return nil, fmt.Errorf("netlink socket buffer: %w", err)
	}
	return s, nil
}

// closeBatch closes the batch socket, once no batch is in flight.
func (h *Handle) closeBatch() {
	h.batch.mu.Lock()
	defer h.batch.mu.Unlock()
	if h.batch.s != nil {
		h.batch.s.Close()
		h.batch.s = nil
	}
}

// routeMessage appends the RTM_NEWROUTE (replace) or RTM_DELROUTE message
// of w to b, as `ip route` sends it. Table and metric are sent only when
// set, as the library does; the main table is the default.
func routeMessage(b []byte, w *RouteWrite, seq uint32, ack bool) []byte {
	r := &w.Route
	start := len(b)
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	if w.Del {
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_REQUEST
	}
	if ack {
		flags |= unix.NLM_F_ACK
	}
	b = append(b, make([]byte, unix.SizeofNlMsghdr)...)
	ne := binary.NativeEndian
	ne.PutUint16(b[start+4:], typ)
	ne.PutUint16(b[start+6:], flags)
	ne.PutUint32(b[start+8:], seq)

	// The header's defaults are the library's (nl.NewRtMsg, nl.NewRtDelMsg),
	// each set field of r overriding them as in its prepareRouteReq.
	ones, _ := r.Dst.Mask.Size()
	table, protocol, rtype := uint8(unix.RT_TABLE_MAIN), uint8(unix.RTPROT_BOOT), uint8(unix.RTN_UNICAST)
	if w.Del {
		protocol, rtype = 0, 0
	}
	switch {
	case r.Table >= 256:
		table = unix.RT_TABLE_UNSPEC
	case r.Table > 0:
		table = uint8(r.Table)
	}
	if r.Protocol > 0 {
		protocol = uint8(r.Protocol)
	}
	if r.Type > 0 {
		rtype = uint8(r.Type)
	}
	b = append(b, unix.AF_INET, uint8(ones), 0, uint8(r.Tos), table, protocol, uint8(r.Scope), rtype)
	b = ne.AppendUint32(b, uint32(r.Flags))

	b = appendAttr(b, unix.RTA_DST, r.Dst.IP.To4())
	if r.Src != nil {
		b = appendAttr(b, unix.RTA_PREFSRC, r.Src.To4())
	}
	if r.Gw != nil {
		b = appendAttr(b, unix.RTA_GATEWAY, r.Gw.To4())
	}
	if r.Table >= 256 {
		b = appendAttr(b, unix.RTA_TABLE, ne.AppendUint32(nil, uint32(r.Table)))
	}
	if r.Priority > 0 {
		b = appendAttr(b, unix.RTA_PRIORITY, ne.AppendUint32(nil, uint32(r.Priority)))
	}
	if r.LinkIndex > 0 {
		b = appendAttr(b, unix.RTA_OIF, ne.AppendUint32(nil, uint32(r.LinkIndex)))
	}
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendAttr appends one route attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

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

type neighItem struct {
	n *netlink.Neigh
	h *Handle
}

func (n neighItem) batchable() bool {
	x := n.n
	return x.IP.To4() != nil && x.LLIPAddr == nil && x.FlagsExt == 0 && x.Vlan == 0 && x.MasterIndex == 0 &&
		(x.Family == unix.AF_INET || x.Family == unix.AF_BRIDGE)
}

func (n neighItem) single() error { return n.h.NeighSet(n.n) }

func (n neighItem) sent() {
	n.h.countNeigh(n.n, VerbNeighSet, VerbFDBSet)
	n.h.echo.expect(neighFP(false, *n.n)) // before the write: the notification may come first
}

func (n neighItem) failed(err error) error {
	n.h.echo.take(neighFP(false, *n.n)) // nothing written, nothing notified
	return fmt.Errorf("%s: %w", n.describe(), err)
}

func (n neighItem) describe() string {
	what := "neighbour"
	if n.n.Family == unix.AF_BRIDGE {
		what = "fdb entry"
	}
	return "set " + what + " " + FormatNeigh(*n.n, "")
}

// encode appends the RTM_NEWNEIGH message of `ip neigh replace` (`bridge
// fdb replace`), as the library's NeighSet sends it.
func (n neighItem) encode(b []byte, seq uint32, ack bool) []byte {
	x := n.n
	start := len(b)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_CREATE | unix.NLM_F_REPLACE)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	ne := binary.NativeEndian
	b = append(b, make([]byte, unix.SizeofNlMsghdr)...)
	ne.PutUint16(b[start+4:], unix.RTM_NEWNEIGH)
	ne.PutUint16(b[start+6:], flags)
	ne.PutUint32(b[start+8:], seq)
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
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}
