package routes

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

const vx = 7 // the VXLAN device's index in these tables

var (
	self = overlay.Self{Host: "h1", PublicIP: netip.MustParseAddr("198.51.100.1")}
	link = state.Link{Name: "flannel.1", Present: true, Up: true, Index: vx, Local: self.PublicIP}
	dst  = netip.MustParsePrefix("198.18.2.0/24")
)

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, b} }
func ip(n byte) netip.Addr        { return netip.AddrFrom4([4]byte{198, 51, 100, n}) }

func record(host string, n byte) state.KeyedNetwork {
	return state.KeyedNetwork{Key: "/r/" + host + "/app", Network: registry.Network{Host: host, Network: "app",
		Subnet: dst, PublicIP: ip(n), VtepMAC: mac(n)}}
}

func lease(n byte) *state.Lease {
	return &state.Lease{Subnet: dst, Raw: flannel.NewVXLAN(ip(n), 1, mac(n)), PublicIP: ip(n), VNI: 1, VtepMAC: mac(n)}
}

// route builds a kernel-shaped route to dst.
func route(dev int, gw string, proto netlink.RouteProtocol, onlink bool) netlink.Route {
	r := netlink.Route{LinkIndex: dev, Dst: netlinkx.IPNet(dst), Protocol: proto, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}
	if gw != "" {
		r.Gw = net.ParseIP(gw).To4()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if onlink {
		r.Flags = unix.RTNH_F_ONLINK
	}
	return r
}

var (
	ours        = route(vx, "198.18.2.0", netlinkx.RouteProtocol, true)
	flannels    = route(vx, "198.18.2.0", netlinkx.FlannelRouteProtocol, true)
	foreignDev  = route(vx, "198.18.2.0", unix.RTPROT_STATIC, true)
	foreignUl   = route(3, "198.51.100.254", unix.RTPROT_STATIC, false)
	bridgeRoute = func() netlink.Route {
		r := route(9, "", netlinkx.KernelRouteProtocol, false)
		r.Src = net.ParseIP("198.18.2.1").To4()
		return r
	}()
)

// describe renders a plan for comparison.
func describe(steps []Step) []string {
	var out []string
	for _, s := range steps {
		verb := "add "
		if s.Del {
			verb = "del "
		}
		out = append(out, verb+netlinkx.FormatRoute(s.Route, ""))
	}
	return out
}

func TestDecideAndPlan(t *testing.T) {
	local := state.LocalNetwork{Name: "app1", Subnet: dst, Gateway: netip.MustParseAddr("198.18.2.1"), Bridge: "br-app"}
	links := map[string]int{"br-app": 9, "ul0": 3}
	for _, tc := range []struct {
		name     string
		in       Input
		actual   []netlink.Route
		want     []string
		conflict string // substring of the conflict's reason; "" for none
	}{
		{name: "record: add ours", in: Input{Records: []state.KeyedNetwork{record("h2", 2)}},
			want: []string{"add 198.18.2.0/24 via 198.18.2.0 dev #7 proto 76 onlink"}},
		{name: "record: in sync", in: Input{Records: []state.KeyedNetwork{record("h2", 2)}}, actual: []netlink.Route{ours}},
		{name: "record replaces flannel's route", in: Input{Records: []state.KeyedNetwork{record("h2", 2)}},
			actual: []netlink.Route{flannels}, want: []string{"add 198.18.2.0/24 via 198.18.2.0 dev #7 proto 76 onlink"}},
		{name: "lease: flannel's exact route", in: Input{Lease: lease(3)},
			want: []string{"add 198.18.2.0/24 via 198.18.2.0 dev #7 onlink"}},
		{name: "lease: in sync", in: Input{Lease: lease(3)}, actual: []netlink.Route{flannels}},
		{name: "lease: ours becomes flannel's", in: Input{Lease: lease(3)}, actual: []netlink.Route{ours},
			want: []string{"add 198.18.2.0/24 via 198.18.2.0 dev #7 onlink"}},
		{name: "nothing claims: ours swept", actual: []netlink.Route{ours}, want: []string{"del 198.18.2.0/24 via 198.18.2.0 dev #7 proto 76 onlink"}},
		{name: "nothing claims: flannel-shaped swept", in: Input{SeesFlannel: true}, actual: []netlink.Route{flannels},
			want: []string{"del 198.18.2.0/24 via 198.18.2.0 dev #7 onlink"}},
		{name: "no lease of this host: flannel-shaped kept", actual: []netlink.Route{flannels}},
		{name: "no lease of this host: ours still swept", actual: []netlink.Route{ours, flannels},
			want: []string{"del 198.18.2.0/24 via 198.18.2.0 dev #7 proto 76 onlink"}},
		{name: "foreign on the device never touched", actual: []netlink.Route{foreignDev}},
		{name: "foreign on the underlay never touched", actual: []netlink.Route{foreignUl}},
		{name: "foreign holds a wanted key", in: Input{Records: []state.KeyedNetwork{record("h2", 2)}},
			actual: []netlink.Route{foreignUl}, conflict: "held by a foreign route"},
		{name: "conflicting records: ours swept, lease's kept", in: Input{Records: []state.KeyedNetwork{record("h2", 2), record("h3", 3)}, Lease: nil},
			actual: []netlink.Route{ours}, want: []string{"del 198.18.2.0/24 via 198.18.2.0 dev #7 proto 76 onlink"}, conflict: "several hosts"},
		{name: "own lease: flannel-shaped swept", in: Input{Lease: lease(1), SeesFlannel: true}, actual: []netlink.Route{flannels},
			want: []string{"del 198.18.2.0/24 via 198.18.2.0 dev #7 onlink"}},
		{name: "local: lease's tunnel route replaced by the bridge's", in: Input{Lease: lease(3), Locals: []state.LocalNetwork{local}},
			actual: []netlink.Route{flannels}, want: []string{"add 198.18.2.0/24 dev #9 proto kernel scope link src 198.18.2.1"},
			conflict: "overlaps local network app1"},
		{name: "local: bridge route kept", in: Input{Records: []state.KeyedNetwork{record("h2", 2)}, Locals: []state.LocalNetwork{local}},
			actual: []netlink.Route{bridgeRoute}, conflict: "overlaps local network app1"},
		{name: "local: missing bridge route restored", in: Input{Lease: lease(3), Locals: []state.LocalNetwork{local}},
			want: []string{"add 198.18.2.0/24 dev #9 proto kernel scope link src 198.18.2.1"}, conflict: "overlaps local network"},
		{name: "local, unclaimed: untouched", in: Input{Locals: []state.LocalNetwork{local}}},
		{name: "local, unclaimed: stray tunnel route swept, bridge restored", in: Input{Locals: []state.LocalNetwork{local}},
			actual: []netlink.Route{ours}, want: []string{"add 198.18.2.0/24 dev #9 proto kernel scope link src 198.18.2.1"}},
		{name: "local: foreign holder never replaced", in: Input{Lease: lease(3), Locals: []state.LocalNetwork{local}},
			actual: []netlink.Route{foreignUl}, conflict: "overlaps local network"},
		{name: "gateway map", in: Input{Gateway: &config.GatewayRoute{Dst: dst, Gateway: ip(254)}},
			want: []string{"add 198.18.2.0/24 via 198.51.100.254 proto 76"}},
		{name: "extra with dev wins over a record", in: Input{Records: []state.KeyedNetwork{record("h2", 2)},
			Extra: &config.ExtraRoute{Dst: dst, Gateway: ip(253), Dev: "ul0"}}, actual: []netlink.Route{ours},
			want: []string{"add 198.18.2.0/24 via 198.51.100.253 dev #3 proto 76"}},
		{name: "no device: only configured routes", in: Input{Link: state.Link{Name: "flannel.1"}, Records: []state.KeyedNetwork{record("h2", 2)}},
			actual: []netlink.Route{flannels}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Dst, in.Self, in.Links = dst, self, links
			if in.Link.Name == "" {
				in.Link = link
			}
			d, err := Decide(in)
			if err != nil {
				t.Fatal(err)
			}
			steps, held := Plan(d, tc.actual, in.Link.Index)
			if got := describe(steps); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan = %q, want %q", got, tc.want)
			}
			c := d.Conflict
			if held != nil {
				c = held
			}
			switch {
			case tc.conflict == "" && c != nil:
				t.Errorf("conflict %v, want none", c)
			case tc.conflict != "" && (c == nil || !strings.Contains(c.Reason, tc.conflict)):
				t.Errorf("conflict %v, want one about %q", c, tc.conflict)
			}
		})
	}
}

func TestDecideExtraDeviceMissing(t *testing.T) {
	_, err := Decide(Input{Dst: dst, Self: self, Link: link, Extra: &config.ExtraRoute{Dst: dst, Gateway: ip(253), Dev: "nope0"}})
	if err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("Decide with a missing device: %v, want an error naming it", err)
	}
}

// TestPlanOrderIndependent replays the kernel's routes in random orders.
func TestPlanOrderIndependent(t *testing.T) {
	in := Input{Dst: dst, Self: self, Link: link, Records: []state.KeyedNetwork{record("h2", 2)}, Links: map[string]int{}}
	d, err := Decide(in)
	if err != nil {
		t.Fatal(err)
	}
	other := ours
	other.Priority = 50 // a second route of ours with another metric: swept
	backup := foreignUl
	backup.Priority = 100 // a foreign route with another metric: kept
	actual := []netlink.Route{flannels, backup, other}
	want, _ := Plan(d, actual, vx)
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		a := append([]netlink.Route(nil), actual...)
		r.Shuffle(len(a), func(i, j int) { a[i], a[j] = a[j], a[i] })
		got, _ := Plan(d, a, vx)
		if !reflect.DeepEqual(sortedDescribe(got), sortedDescribe(want)) {
			t.Fatalf("order %v: plan %q, want %q", a, describe(got), describe(want))
		}
	}
	if got := describe(want); len(got) != 2 || !strings.HasPrefix(got[0], "add ") {
		t.Errorf("plan %q: want the add first, then one delete", got)
	}
}

func sortedDescribe(s []Step) []string {
	d := describe(s)
	if len(d) > 1 {
		rest := d[1:]
		for i := range rest {
			for j := i + 1; j < len(rest); j++ {
				if rest[j] < rest[i] {
					rest[i], rest[j] = rest[j], rest[i]
				}
			}
		}
	}
	return d
}
