package flannel

import (
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
		{"fd00::-64", ""},     // IPv6
		{"010.5.35.0-24", ""}, // leading zero
		{"::ffff:10.5.35.0-120", ""},
		{"10.5.35.0-24-1", ""},
		{"", ""},
	} {
		p, err := ParseSubnetKey(tc.key)
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

// FuzzParseSubnetKey: parse ok implies SubnetKey(p) == input.
func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"10.5.35.0-24", "0.0.0.0-0", "255.255.255.255-32", "10.5.35.1-24", "1.2.3.4-08", "::-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubnetKey(s)
		if err != nil {
			return
		}
		if !p.Addr().Is4() || p.Masked() != p {
			t.Fatalf("ParseSubnetKey(%q) accepted %s", s, p)
		}
		if back := SubnetKey(p); back != s {
			t.Fatalf("SubnetKey(ParseSubnetKey(%q)) = %q", s, back)
		}
	})
}
