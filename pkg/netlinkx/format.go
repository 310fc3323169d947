package netlinkx

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FormatRoute renders r in `ip route` words and order for logs and change
// records, e.g. "198.19.2.0/24 via 198.19.2.0 dev flannel.1 proto 76
// onlink". dev names r's device; when empty the index is printed. Like
// `ip route`, it omits the boot protocol (flanneld's) and the main table.
func FormatRoute(r netlink.Route, dev string) string {
	var b strings.Builder
	b.WriteString(Prefix(r.Dst).String())
	if r.Gw != nil {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	switch {
	case dev != "":
		fmt.Fprintf(&b, " dev %s", dev)
	case r.LinkIndex > 0:
		fmt.Fprintf(&b, " dev #%d", r.LinkIndex)
	}
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	switch r.Protocol {
	case 0, FlannelRouteProtocol:
	case KernelRouteProtocol:
		b.WriteString(" proto kernel")
	default:
		fmt.Fprintf(&b, " proto %d", int(r.Protocol))
	}
	if r.Scope == netlink.SCOPE_LINK {
		b.WriteString(" scope link")
	}
	if r.Src != nil {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	if r.Priority != 0 {
		fmt.Fprintf(&b, " metric %d", r.Priority)
	}
	if r.Flags&unix.RTNH_F_ONLINK != 0 {
		b.WriteString(" onlink")
	}
	return b.String()
}

// FormatNeigh renders n in `ip neigh` / `bridge fdb` words.
func FormatNeigh(n netlink.Neigh, dev string) string {
	if dev == "" {
		dev = fmt.Sprintf("#%d", n.LinkIndex)
	}
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("%s dst %s dev %s self permanent", n.HardwareAddr, n.IP, dev)
	}
	return fmt.Sprintf("%s lladdr %s dev %s nud permanent", n.IP, n.HardwareAddr, dev)
}
