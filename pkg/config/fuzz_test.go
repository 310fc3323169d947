package config

import (
	"strings"
	"testing"
)

// FuzzParseGatewayMap checks that any input either fails or yields routes that are valid and
// print back to an input that parses to the same routes.
func FuzzParseGatewayMap(f *testing.F) {
	for _, s := range []string{"", "172.24.90.1:172.24.90.6", "10.0.0.0/8:1.1.1.1, 2.2.2.2:3.3.3.3,",
		"0.0.0.0/0:1.1.1.1", "::1:1.1.1.1", "1.1.1.1:1.1.1.1:x", "1.1.1.1/33:2.2.2.2", ",,,:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		routes, err := parseGatewayMap(s)
		if err != nil {
			if routes != nil {
				t.Fatalf("%q: routes %v with error %v", s, routes, err)
			}
			return
		}
		for _, r := range routes {
			if !r.Dst.Addr().Is4() || r.Dst != r.Dst.Masked() || r.Dst.Bits() == 0 || !usableUnicast(r.Gateway) {
				t.Fatalf("%q: invalid route %v", s, r)
			}
		}
		again, err := parseGatewayMap(strings.Join(stringsOf(routes), ","))
		if err != nil || len(again) != len(routes) {
			t.Fatalf("%q: round trip gave %v, %v", s, again, err)
		}
		for i := range routes {
			if again[i] != routes[i] {
				t.Fatalf("%q: round trip %v != %v", s, again[i], routes[i])
			}
		}
	})
}

// FuzzParseRoutesExtra is FuzzParseGatewayMap for FLANNEL_ROUTES_EXTRA.
func FuzzParseRoutesExtra(f *testing.F) {
	for _, s := range []string{"", "10.10.0.0/16:198.51.100.1:eth0", "10.10.0.0/16:198.51.100.1", "a:b:c:d", "1.1.1.1:2.2.2.2:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		routes, err := parseRoutesExtra(s)
		if err != nil {
			return
		}
		for _, r := range routes {
			if _, err := parseIfname(r.Dev); r.Dev != "" && err != nil {
				t.Fatalf("%q: invalid device in %v", s, r)
			}
		}
		again, err := parseRoutesExtra(strings.Join(stringsOf(routes), ","))
		if err != nil || len(again) != len(routes) {
			t.Fatalf("%q: round trip gave %v, %v", s, again, err)
		}
		for i := range routes {
			if again[i] != routes[i] {
				t.Fatalf("%q: round trip %v != %v", s, again[i], routes[i])
			}
		}
	})
}

// FuzzLoad feeds one value to every setting and one argument list; Load must not panic, every
// error line must name a setting or the command line, and a success must hold valid values.
func FuzzLoad(f *testing.F) {
	f.Add("60", "once --debug")
	f.Add("/a//b", "--interval=x run")
	f.Add("", "-h")
	f.Add("\x00\n", "--host-name \n")
	f.Fuzz(func(t *testing.T, value, args string) {
		env := func(string) string { return value }
		c, err := LoadWith(strings.Fields(args), env, testOpts)
		if err != nil {
			return
		}
		if c.Mode == ModeVersion {
			return
		}
		if c.Interval < 1e9 || c.RegistrationTTL < 10e9 || c.HostName == "" || c.VXLANIface == "" ||
			len(c.EtcdEndpoints) == 0 || !strings.HasPrefix(c.FlannelPrefix, "/") {
			t.Fatalf("accepted invalid config %+v from %q %q", c, value, args)
		}
	})
}
