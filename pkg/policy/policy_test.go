package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// facts of a host like the lab's: underlay 198.51.100.0/24 with a default
// gateway, etcd one hop away, flannel's Network 10.5.0.0/16, two known VTEPs.
func facts() Facts {
	known := []netip.Addr{addr("198.51.100.2"), addr("203.0.113.7")}
	return Facts{
		FlannelNetwork: pfx("10.5.0.0/16"),
		Underlay: Underlay{
			Addrs:    []netip.Prefix{pfx("198.51.100.1/24")},
			Routes:   []netip.Prefix{pfx("198.51.100.0/24"), pfx("192.0.2.64/26")},
			Gateways: []netip.Addr{addr("198.51.100.254")},
			Etcd:     []netip.Addr{addr("203.0.113.10"), addr("198.51.100.254")},
			Peers:    []netip.Prefix{pfx("172.31.200.0/24"), pfx("192.168.201.9/32")},
		},
		PublicIPIn: func(p netip.Prefix) (netip.Addr, bool) {
			for _, a := range known {
				if p.Contains(a) {
					return a, true
				}
			}
			return netip.Addr{}, false
		},
	}
}

// The same rules serve both directions: what a peer publishes before it is
// programmed here, and a local Docker network before it is published.
func TestCheck(t *testing.T) {
	wide := Policy{Allowed: []netip.Prefix{pfx("0.0.0.0/0")}, MinBits: 1}
	for _, tc := range []struct {
		name   string
		p      Policy
		subnet string
		rule   string // "" = allowed
		detail string
	}{
		{"flannel lease", Policy{}, "10.5.35.0/24", "", ""},
		{"docker pool", Policy{}, "172.18.0.0/16", "", ""},
		{"docker /20 of 192.168", Policy{}, "192.168.16.0/20", "", ""},
		{"10/8 private", Policy{}, "10.9.0.0/16", "", ""},
		{"outside defaults", Policy{}, "198.19.4.0/24", RuleNotAllowed, "outside the allowed ranges 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,10.5.0.0/16"},
		{"configured range", Policy{Allowed: []netip.Prefix{pfx("198.18.0.0/15")}}, "198.19.4.0/24", "", ""},
		{"configured range excludes the defaults", Policy{Allowed: []netip.Prefix{pfx("198.18.0.0/15")}}, "10.5.35.0/24", RuleNotAllowed, "198.18.0.0/15"},
		{"straddles an allowed range", Policy{Allowed: []netip.Prefix{pfx("198.18.0.0/16")}}, "198.18.0.0/15", RuleNotAllowed, ""},
		{"a /1 (half the space)", wide, "128.0.0.0/1", RuleReserved, "169.254.0.0/16"},
		{"a /2", Policy{}, "64.0.0.0/2", RuleReserved, "127.0.0.0/8"},
		{"a /9 in 10/8", Policy{}, "10.0.0.0/9", RulePrefixLen, "/9 is wider than the minimum prefix length /12"},
		{"a /8 by default", Policy{}, "10.0.0.0/8", RulePrefixLen, ""},
		{"a /8 when allowed", Policy{MinBits: 8}, "10.0.0.0/8", "", ""},
		{"default route", wide, "0.0.0.0/0", RuleReserved, "0.0.0.0/8"},
		{"this network", wide, "0.0.0.0/8", RuleReserved, ""},
		{"loopback", wide, "127.0.0.0/8", RuleReserved, "127.0.0.0/8"},
		{"cloud metadata", wide, "169.254.169.254/32", RuleReserved, "169.254.0.0/16"},
		{"multicast", wide, "224.0.0.0/4", RuleReserved, "224.0.0.0/4"},
		{"class E", wide, "240.0.0.0/4", RuleReserved, ""},
		{"broadcast", wide, "255.255.255.255/32", RuleReserved, ""},
		{"etcd's address", wide, "203.0.113.10/32", RuleUnderlay, "203.0.113.10, on the path to etcd"},
		{"this host's address", wide, "198.51.100.1/32", RuleUnderlay, "this host's address 198.51.100.1"},
		{"over this host's network", wide, "198.51.100.128/25", RuleUnderlay, "this host's network 198.51.100.0/24"},
		{"a connected route", wide, "192.0.2.64/27", RuleUnderlay, "connected route 192.0.2.64/26"},
		{"around the underlay", wide, "198.48.0.0/12", RuleUnderlay, ""},
		{"the default gateway", wide, "198.51.100.254/32", RuleUnderlay, ""},
		{"inside a HOST_GATEWAY_MAP range", Policy{}, "172.31.200.64/26", RuleUnderlay, "overlaps 172.31.200.0/24, the path to peers through a gateway"},
		{"around a HOST_GATEWAY_MAP address", Policy{}, "192.168.201.0/24", RuleUnderlay, "192.168.201.9/32"},
		{"beside the HOST_GATEWAY_MAP ranges", Policy{}, "172.31.201.0/24", "", ""},
		{"a peer's PublicIP", wide, "203.0.113.7/32", RulePublicIP, "VTEP address 203.0.113.7"},
		{"ipv6", wide, "fd00::/64", RuleNotAllowed, "not an IPv4 subnet"},
		{"host bits are masked", Policy{}, "10.5.35.9/24", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.p.Check(pfx(tc.subnet), facts())
			switch {
			case tc.rule == "" && r != nil:
				t.Fatalf("Check(%s) = %v, want allowed", tc.subnet, r)
			case tc.rule != "" && r == nil:
				t.Fatalf("Check(%s) allowed, want %s", tc.subnet, tc.rule)
			case r != nil && (r.Rule != tc.rule || !strings.Contains(r.Detail, tc.detail)):
				t.Fatalf("Check(%s) = %v, want rule %s with %q", tc.subnet, r, tc.rule, tc.detail)
			}
		})
	}
}

// Without facts (nothing observed, flannel's config unread) only the
// settings and the reserved ranges apply.
func TestCheckWithoutFacts(t *testing.T) {
	if r := (Policy{}).Check(pfx("10.5.35.0/24"), Facts{}); r != nil {
		t.Fatal(r)
	}
	if r := (Policy{}).Check(pfx("198.19.0.0/24"), Facts{}); r == nil || r.Rule != RuleNotAllowed {
		t.Fatalf("got %v", r)
	}
}

func TestCheckPublicIP(t *testing.T) {
	own := addr("198.51.100.1")
	s := pfx("10.5.1.0/24")
	for ip, want := range map[string]string{
		"198.51.100.2": "",
		"203.0.113.9":  "",
		"198.51.100.1": "this host's own",
		"127.0.0.1":    "not a unicast underlay address",
		"0.0.0.0":      "not a unicast underlay address",
		"0.1.2.3":      "reserved range 0.0.0.0/8",
		"169.254.1.1":  "not a unicast underlay address",
		"224.0.0.1":    "not a unicast underlay address",
		"240.0.0.1":    "reserved range 240.0.0.0/4",
		"::1":          "not an IPv4 address",
	} {
		r := CheckPublicIP(s, addr(ip), own)
		switch {
		case want == "" && r != nil:
			t.Errorf("%s: %v, want accepted", ip, r)
		case want != "" && (r == nil || r.Rule != RuleVTEP || !strings.Contains(r.Detail, want)):
			t.Errorf("%s: %v, want %q", ip, r, want)
		}
	}
	if r := CheckPublicIP(s, netip.Addr{}, own); r == nil {
		t.Error("an invalid address was accepted")
	}
}

func TestAllowedRanges(t *testing.T) {
	got := Policy{}.AllowedRanges(Facts{FlannelNetwork: pfx("198.18.0.0/16")})
	if join(got) != "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,198.18.0.0/16" {
		t.Fatalf("defaults = %v", got)
	}
	set := []netip.Prefix{pfx("10.5.0.0/16")}
	if got := (Policy{Allowed: set}).AllowedRanges(Facts{FlannelNetwork: pfx("198.18.0.0/16")}); join(got) != "10.5.0.0/16" {
		t.Fatalf("configured = %v", got)
	}
}
