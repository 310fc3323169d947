package netlinkx

// This file: routes written in batches (see batch.go).

import (
	"encoding/binary"
	"fmt"
	"reflect"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteWrite is one route write of a batch: a replace (`ip route
// replace`), or with Del a delete (a route already gone is no error).
type RouteWrite struct {
	Del   bool
	Route netlink.Route
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

type routeItem struct {
	w *RouteWrite
	h *Handle
}

func (r routeItem) batchable() bool { return batchable(r.w.Route) }

func (r routeItem) single() error {
	return r.h.writeOne(r, func(w *netlink.Handle) error {
		if r.w.Del {
			return w.RouteDel(&r.w.Route)
		}
		return w.RouteReplace(&r.w.Route)
	})
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

// batchable says whether r has only what routeMessage encodes: an IPv4
// unicast route whose other fields are all unset.
func batchable(r netlink.Route) bool {
	if r.Dst == nil || r.Dst.IP.To4() == nil || (r.Gw != nil && r.Gw.To4() == nil) ||
		(r.Src != nil && r.Src.To4() == nil) || r.Type > unix.RTN_UNICAST || (r.Family != 0 && r.Family != unix.AF_INET) {
		return false
	}
	rest := r
	rest.Dst, rest.Gw, rest.Src = nil, nil, nil
	rest.LinkIndex, rest.Scope, rest.Protocol, rest.Priority, rest.Family, rest.Table, rest.Type, rest.Tos, rest.Flags = 0, 0, 0, 0, 0, 0, 0, 0, 0
	return reflect.ValueOf(rest).IsZero()
}

// routeMessage appends the RTM_NEWROUTE (replace) or RTM_DELROUTE message
// of w to b, as `ip route` sends it. Table and metric are sent only when
// set, as the library does; the main table is the default.
func routeMessage(b []byte, w *RouteWrite, seq uint32, ack bool) []byte {
	r := &w.Route
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	if w.Del {
		typ, flags = unix.RTM_DELROUTE, 0
	}
	b, start := beginMessage(b, typ, flags, seq, ack)
	ne := binary.NativeEndian

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
	return endMessage(b, start)
}
