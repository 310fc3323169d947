package flannel

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// flanneldVXLAN is a lease value exactly as flanneld v0.27 writes it.
const flanneldVXLAN = `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:dd"}}`

func TestFlanneldLeaseRoundTrip(t *testing.T) {
	l, err := Decode([]byte(flanneldVXLAN))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(l)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != flanneldVXLAN {
		t.Fatalf("Encode(Decode(x)) =\n%s\nwant\n%s", b, flanneldVXLAN)
	}
	d, mac, err := l.VXLAN()
	if err != nil || d.VNI != 1 || mac.String() != "c6:a7:e4:a5:a1:dd" {
		t.Fatalf("VXLAN() = %+v, %s, %v", d, mac, err)
	}
	// NewVXLAN builds the same bytes.
	b2, _ := Encode(NewVXLAN(netip.MustParseAddr("198.51.100.1"), 1, mac))
	if string(b2) != flanneldVXLAN {
		t.Errorf("NewVXLAN encodes to\n%s\nwant\n%s", b2, flanneldVXLAN)
	}
}

func TestReservation(t *testing.T) {
	b, err := Encode(NewReservation("h1", "app1"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"app1"}}`
	if string(b) != want {
		t.Fatalf("reservation = %s\nwant          %s", b, want)
	}
	l, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Reservation()
	if err != nil || d != (ReservationData{Host: "h1", Network: "app1"}) {
		t.Fatalf("Reservation() = %+v, %v", d, err)
	}
	if _, _, err := l.VXLAN(); err == nil {
		t.Error("a reservation parsed as a vxlan lease")
	}
	vx, _ := Decode([]byte(flanneldVXLAN))
	if _, err := vx.Reservation(); err == nil {
		t.Error("a vxlan lease parsed as a reservation")
	}
	// Names follow HOST_NAME's rule and Docker's network name rule.
	for _, tc := range []struct{ data, why string }{
		{`{"Host":"h_1","Network":"app1"}`, "expected a hostname"},
		{`{"Host":"h1/x","Network":"app1"}`, "expected a hostname"},
		{`{"Host":"h1","Network":"app/1"}`, "expected a Docker network name"},
		{`{"Host":"h1","Network":".app"}`, "expected a Docker network name"},
		{`{"Host":"h1","Network":"app1","network":"x"}`, "differ only in case"},
	} {
		l := Lease{PublicIP: "0.0.0.0", BackendType: BackendReservation, BackendData: []byte(tc.data)}
		if _, err := l.Reservation(); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Reservation(%s) = %v; want an error about %q", tc.data, err, tc.why)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ value, why string }{
		{``, "decode lease"},
		{`not json`, "decode lease"},
		{`{"PublicIP":"198.51.100.1","BackendType":""}`, "BackendType"},
		{`{"PublicIP":"","BackendType":"vxlan"}`, "PublicIP"},
		{`{"PublicIP":"fd00::1","BackendType":"vxlan"}`, "PublicIP"},
		{`{"PublicIP":"198.51.100.1","BackendType":"vxlan"} {}`, "after top-level value"},
		{`{"PublicIP":"198.51.100.1","BackendType":"vxlan"}]`, "after top-level value"},
		{`{"PublicIP":"198.51.100.1","BackendType":"vxlan"}}`, "after top-level value"},
		{`[1]`, "decode lease"},
		// Ambiguous or oversized: refused.
		{`{"PublicIP":"198.51.100.1","PublicIP":"198.51.100.2","BackendType":"vxlan"}`, `duplicate key "PublicIP"`},
		{`{"PublicIP":"198.51.100.1","publicIP":"198.51.100.2","BackendType":"vxlan"}`, "differ only in case"},
		{`{"PUBLICIP":"198.51.100.1","BackendType":"vxlan"}`, `key "PUBLICIP" is not "PublicIP"`},
		{`{"PublicIP":"198.51.100.1","backendtype":"vxlan"}`, `key "backendtype" is not "BackendType"`},
		{`{"PublicIP":"198.51.100.1","BackendType":"vxlan","BackendData":{"VNI":1,"VNI":2}}`, `duplicate key "VNI" in BackendData`},
		{`{"PublicIP":"198.51.100.1","BackendType":"vxlan","Pad":"` + strings.Repeat("x", MaxValueSize) + `"}`, "over the size cap of 4096 bytes"},
	} {
		if _, err := Decode([]byte(tc.value)); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Decode(%q) = %v; want an error about %q", tc.value, err, tc.why)
		}
	}
}

func TestVXLANRejects(t *testing.T) {
	for _, tc := range []struct{ data, why string }{
		{`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`, "unicast"},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, "unicast"},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:00:00:00:01"}`, "6-byte"},
		{`{"VNI":1,"VtepMAC":""}`, "6-byte"},
		{`{"VNI":16777216,"VtepMAC":"c6:a7:e4:a5:a1:dd"}`, "VNI"},
		{`{"VNI":-1,"VtepMAC":"c6:a7:e4:a5:a1:dd"}`, "VNI"},
		{`"x"`, "backend data"},
		{``, "backend data"},
		{`{"VNI":1,"vtepmac":"c6:a7:e4:a5:a1:dd"}`, `key "vtepmac" is not "VtepMAC"`},
	} {
		l := Lease{PublicIP: "198.51.100.1", BackendType: BackendVXLAN, BackendData: []byte(tc.data)}
		if _, _, err := l.VXLAN(); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("VXLAN(%s) = %v; want an error about %q", tc.data, err, tc.why)
		}
	}
}

func TestSubnetKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // prefix, "" when invalid
	}{
		{"10.5.35.0-24", "10.5.35.0/24"},
		{"0.0.0.0-0", "0.0.0.0/0"},
		{"198.19.1.1-32", "198.19.1.1/32"},
		{"10.5.35.1-24", ""},  // host bits
		{"10.5.35.0-33", ""},  // length
		{"10.5.35.0-024", ""}, // not canonical
		{"10.5.35.0--1", ""},  // negative
		{"10.5.35.0-+8", ""},  // sign
		{"10.5.35.0/24", ""},  // CIDR form
		{"10.5.35.0", ""},     // no length
		{"fd00::-64", ""},     // IPv6 alone
		{"010.5.35.0-24", ""}, // leading zero
		{"::ffff:10.5.35.0-120", ""},
		{"10.5.35.0-24-1", ""},
		{"", ""},
	} {
		p, err := ParseSubnetKey(tc.key)
		if p4, _, err4 := ParseSubnetKeys(tc.key); p4 != p || (err4 == nil) != (err == nil) {
			t.Errorf("ParseSubnetKeys(%q) = %s, %v; ParseSubnetKey = %s, %v", tc.key, p4, err4, p, err)
		}
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseSubnetKey(%q) = %s; want an error", tc.key, p)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParseSubnetKey(%q) = %s, %v; want %s", tc.key, p, err, tc.want)
			continue
		}
		if back := SubnetKey(p); back != tc.key {
			t.Errorf("SubnetKey(%s) = %q, want %q", p, back, tc.key)
		}
	}
}

// TestDualStackKey: flanneld's dual-stack lease keys parse to their IPv4
// subnet (what overlap checks and routes use) and keep the IPv6 one.
func TestDualStackKey(t *testing.T) {
	for _, tc := range []struct{ key, v4, v6, err string }{
		{"10.5.35.0-24&fd00::-64", "10.5.35.0/24", "fd00::/64", ""},
		{"10.5.35.0-24&fd00:0:0:23::-64", "10.5.35.0/24", "fd00:0:0:23::/64", ""},
		{"10.5.35.0-24&2001:db8:1:2::-64", "10.5.35.0/24", "2001:db8:1:2::/64", ""},
		{"10.5.35.0-24&fd00::-128", "10.5.35.0/24", "fd00::/128", ""},
		{"0.0.0.0-0&fd00::-64", "", "fd00::/64", "IPv6-only"},
		{"10.5.35.0-24&", "", "", "expected"},
		{"10.5.35.0-24&fd00::", "", "", "expected"},
		{"10.5.35.0-24&fd00::1-64", "", "", "host bits"},
		{"10.5.35.0-24&FD00::-64", "", "", "canonical IPv6"},
		{"10.5.35.0-24&fd00:0::-64", "", "", "canonical IPv6"},
		{"10.5.35.0-24&10.5.36.0-24", "", "", "canonical IPv6"},
		{"10.5.35.0-24&::ffff:10.5.35.0-120", "", "", "canonical IPv6"},
		{"10.5.35.0-24&fe80::%eth0-64", "", "", "canonical IPv6"},
		{"10.5.35.0-24&fd00::-129", "", "", "prefix length 0-128"},
		{"10.5.35.0-24&fd00::-64&fd01::-64", "", "", ""},
		{"10.5.35.1-24&fd00::-64", "", "", "host bits"},
	} {
		p4, p6, err := ParseSubnetKeys(tc.key)
		if tc.v4 == "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSubnetKeys(%q) = %s, %s, %v; want an error about %q", tc.key, p4, p6, err, tc.err)
			}
			if tc.err == "IPv6-only" && !errors.Is(err, ErrIPv6Only) {
				t.Errorf("ParseSubnetKeys(%q): %v is not ErrIPv6Only", tc.key, err)
			}
			continue
		}
		if err != nil || p4.String() != tc.v4 || p6.String() != tc.v6 {
			t.Errorf("ParseSubnetKeys(%q) = %s, %s, %v; want %s, %s", tc.key, p4, p6, err, tc.v4, tc.v6)
			continue
		}
		if back := DualStackKey(p4, p6); back != tc.key {
			t.Errorf("DualStackKey(%s, %s) = %q, want %q", p4, p6, back, tc.key)
		}
		if only4, err := ParseSubnetKey(tc.key); err != nil || only4 != p4 {
			t.Errorf("ParseSubnetKey(%q) = %s, %v", tc.key, only4, err)
		}
	}
}

func TestParseVtepMAC(t *testing.T) {
	if mac, err := ParseVtepMAC("C6:A7:E4:A5:A1:DD"); err != nil || mac.String() != "c6:a7:e4:a5:a1:dd" {
		t.Errorf("ParseVtepMAC upper case = %s, %v", mac, err)
	}
	if _, err := ParseVtepMAC("ff:ff:ff:ff:ff:ff"); err == nil {
		t.Error("broadcast MAC accepted")
	}
}

// FuzzDecodeLease: Decode never panics, and whatever it accepts encodes, and
// the encoding decodes to the same lease (encoding is a fixed point).
func FuzzDecodeLease(f *testing.F) {
	f.Add([]byte(flanneldVXLAN))
	f.Add([]byte(`{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"app1"}}`))
	f.Add([]byte(`{"PublicIP":"127.0.0.1","BackendType":"host-gw"}`))
	f.Add([]byte(`{"PublicIP":"198.51.100.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":null}`))
	f.Add([]byte(`{"PublicIP":"198.51.100.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:dd","Extra":true}}`))
	f.Add([]byte(`{"PublicIP":"198.51.100.1","publicip":"10.0.0.1","BackendType":"vxlan"}`))
	f.Add([]byte(`{"PublicIP":"198.51.100.1","BackendType":"vxlan","BackendData":{"VNI":1,"VNI":2}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Encode(l)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", b, err)
		}
		l2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		enc2, err := Encode(l2)
		if err != nil || string(enc2) != string(enc) {
			t.Fatalf("encoding not a fixed point: %s vs %s (%v)", enc, enc2, err)
		}
		// The typed views never panic and validate what they return.
		if _, mac, err := l.VXLAN(); err == nil && (len(mac) != 6 || mac[0]&1 == 1) {
			t.Fatalf("VXLAN accepted MAC %s", mac)
		}
		if d, err := l.Reservation(); err == nil && (d.Host == "" || d.Network == "") {
			t.Fatalf("Reservation accepted %+v", d)
		}
	})
}

// FuzzParseSubnetKey: parse ok implies DualStackKey(p4, p6) == input, with
// a canonical IPv4 subnet and, when present, a canonical IPv6 one.
func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"10.5.35.0-24", "0.0.0.0-0", "255.255.255.255-32", "10.5.35.1-24", "1.2.3.4-08", "::-0",
		"10.5.35.0-24&fd00::-64", "0.0.0.0-0&fd00::-64", "10.5.35.0-24&fd00::1-64", "10.5.35.0-24&FD00::-64",
		"10.5.35.0-24&::ffff:1.2.3.4-128", "10.5.35.0-24&fd00::-64&", "10.5.35.0-24&2001:db8::-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p4, p6, err := ParseSubnetKeys(s)
		if err != nil {
			return
		}
		if !p4.Addr().Is4() || p4.Masked() != p4 || p4.Bits() == 0 && p6.IsValid() {
			t.Fatalf("ParseSubnetKeys(%q) accepted IPv4 %s", s, p4)
		}
		if p6.IsValid() && (!p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Masked() != p6) {
			t.Fatalf("ParseSubnetKeys(%q) accepted IPv6 %s", s, p6)
		}
		if back := DualStackKey(p4, p6); back != s {
			t.Fatalf("DualStackKey(ParseSubnetKeys(%q)) = %q", s, back)
		}
		if only4, err := ParseSubnetKey(s); err != nil || only4 != p4 {
			t.Fatalf("ParseSubnetKey(%q) = %s, %v; ParseSubnetKeys gave %s", s, only4, err, p4)
		}
	})
}
