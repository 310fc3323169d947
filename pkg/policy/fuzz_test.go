package policy

import (
	"net/netip"
	"testing"
)

// FuzzCheck: for any subnet (as another host may publish it), a subnet the
// policy accepts is never reserved, never wider than the minimum, inside an
// allowed range, and never over this host's underlay.
func FuzzCheck(f *testing.F) {
	f.Add([]byte{10, 5, 35, 0}, uint8(24))
	f.Add([]byte{198, 51, 100, 0}, uint8(24))
	f.Add([]byte{127, 0, 0, 1}, uint8(32))
	f.Add([]byte{10, 0, 0, 0}, uint8(8))
	f.Add([]byte{0, 0, 0, 0}, uint8(0))
	f.Add([]byte{192, 168, 1, 7}, uint8(30))
	facts := Facts{
		FlannelNetwork: netip.MustParsePrefix("198.18.0.0/15"),
		Underlay: Underlay{
			Addrs:    []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("10.9.0.5/16")},
			Routes:   []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")},
			Gateways: []netip.Addr{netip.MustParseAddr("192.168.7.1")},
			Etcd:     []netip.Addr{netip.MustParseAddr("10.20.30.40")},
		},
		PublicIPIn: func(p netip.Prefix) (netip.Addr, bool) {
			a := netip.MustParseAddr("10.100.0.9")
			return a, p.Contains(a)
		},
	}
	pol := Policy{}
	f.Fuzz(func(t *testing.T, addr []byte, bits uint8) {
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		p, err := a.Prefix(int(bits))
		if err != nil {
			return
		}
		if r := pol.Check(p, facts); r != nil {
			if r.Rule == "" {
				t.Fatalf("refusal of %s without a rule", p)
			}
			return
		}
		if !p.Addr().Is4() || p.Bits() < DefaultMinBits {
			t.Fatalf("accepted %s", p)
		}
		for _, r := range Reserved {
			if p.Overlaps(r) {
				t.Fatalf("accepted %s over reserved %s", p, r)
			}
		}
		inside := false
		for _, r := range pol.AllowedRanges(facts) {
			inside = inside || (r.Bits() <= p.Bits() && r.Contains(p.Addr()))
		}
		if !inside {
			t.Fatalf("accepted %s outside the allowed ranges", p)
		}
		u := facts.Underlay
		for _, x := range append(append([]netip.Prefix{}, u.Routes...), u.Addrs[0].Masked(), u.Addrs[1].Masked()) {
			if p.Overlaps(x) {
				t.Fatalf("accepted %s over underlay %s", p, x)
			}
		}
		for _, g := range append(append([]netip.Addr{}, u.Gateways...), u.Etcd...) {
			if p.Contains(g) {
				t.Fatalf("accepted %s containing %s", p, g)
			}
		}
		if _, in := facts.PublicIPIn(p); in {
			t.Fatalf("accepted %s containing a VTEP address", p)
		}
	})
}
