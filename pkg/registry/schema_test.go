package registry

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var testKeys = Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

func TestKeysParse(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want ParsedKey
		err  string
	}{
		{"/flannel/network/subnets/h1/app1", ParsedKey{Kind: KindNetwork, Host: "h1", Network: "app1"}, ""},
		{"/flannel/network/subnets/_hosts/h1", ParsedKey{Kind: KindHost, Host: "h1"}, ""},
		{"/coreos.com/network/subnets/10.5.35.0-24", ParsedKey{Kind: KindSubnet, Subnet: netip.MustParsePrefix("10.5.35.0/24")}, ""},
		{"/coreos.com/network/subnets/10.5.35.1-24", ParsedKey{}, "host bits"},
		{"/flannel/network/subnets/_quarantine/x", ParsedKey{}, "quarantined"},
		{"/flannel/network/subnets/_other/x", ParsedKey{}, "reserved"},
		{"/flannel/network/subnets/h1", ParsedKey{}, "expected"},
		{"/flannel/network/subnets/h1/a/b", ParsedKey{}, "expected"},
		{"/flannel/network/subnets/h1/", ParsedKey{}, "expected"},
		{"/elsewhere/x", ParsedKey{}, "outside"},
		{"/flannel/network/subnets/h_1/app1", ParsedKey{}, `host name "h_1": expected a hostname`},
		{"/flannel/network/subnets/-h1/app1", ParsedKey{}, "expected a hostname"},
		{"/flannel/network/subnets/h1/_app", ParsedKey{}, `network name "_app": expected a Docker network name`},
		{"/flannel/network/subnets/h1/a:b", ParsedKey{}, "expected a Docker network name"},
		{"/flannel/network/subnets/_hosts/h.1.", ParsedKey{}, "expected a hostname"},
		{"/flannel/network/subnets/h1/" + strings.Repeat("a", 500), ParsedKey{}, "over the size cap of 512 bytes"},
		{"/flannel/network/subnets/h1/a.b_c-D9", ParsedKey{Kind: KindNetwork, Host: "h1", Network: "a.b_c-D9"}, ""},
	} {
		got, err := testKeys.Parse(tc.key)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error = %v, want it to mention %q", tc.key, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.key, got, err, tc.want)
		}
	}
	// Building then parsing gives back the parts.
	if pk, err := testKeys.Parse(testKeys.Network("h1", "app1")); err != nil || pk.Host != "h1" || pk.Network != "app1" {
		t.Errorf("Parse(Network(h1, app1)) = %+v, %v", pk, err)
	}
	if pk, err := testKeys.Parse(testKeys.Host("h1")); err != nil || pk.Kind != KindHost {
		t.Errorf("Parse(Host(h1)) = %+v, %v", pk, err)
	}
}

func TestDecodeNetworkRejects(t *testing.T) {
	good := `{"Host":"h1","Network":"app1","Subnet":"198.19.1.0/24","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
	if _, err := DecodeNetwork([]byte(good)); err != nil {
		t.Fatalf("good record rejected: %v", err)
	}
	for _, tc := range []struct{ from, to, why string }{
		{`"Host":"h1"`, `"Host":""`, "Host"},
		{`"Network":"app1"`, `"Network":"a/b"`, "Network"},
		{`198.19.1.0/24`, `198.19.1.1/24`, "host bits"},
		{`198.19.1.0/24`, `fd00::/64`, "IPv4 CIDR"},
		{`198.51.100.1`, `127.0.0.1`, "VXLAN endpoint"},
		{`198.51.100.1`, `0.0.0.0`, "VXLAN endpoint"},
		{`"PublicIP":"198.51.100.1"`, `"PublicIP":""`, "PublicIP"},
		{`c6:a7:e4:a5:a1:dd`, `01:00:5e:00:00:01`, "unicast"},
		{`c6:a7:e4:a5:a1:dd`, `00:00:00:00:00:00`, "unicast"},
		{`c6:a7:e4:a5:a1:dd`, `nope`, "6-byte"},
		{`"VNI":1`, `"VNI":16777216`, "VNI"},
		{`{"Host"`, `[{"Host"`, "decode"},
		{`"Host":"h1"`, `"Host":"h_1"`, "expected a hostname"},
		{`"Network":"app1"`, `"Network":"app 1"`, "expected a Docker network name"},
		{`"Subnet":"198.19.1.0/24"`, `"Subnet":"198.19.1.0/24","Subnet":"0.0.0.0/0"`, `duplicate key "Subnet"`},
		{`"Subnet":"198.19.1.0/24"`, `"Subnet":"198.19.1.0/24","subnet":"0.0.0.0/0"`, "differ only in case"},
		{`"PublicIP"`, `"PUBLICIP"`, `key "PUBLICIP" is not "PublicIP"`},
		{`"VNI":1`, `"VNI":1,"Pad":"` + strings.Repeat("x", MaxValueSize) + `"`, "over the size cap of 4096 bytes"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if _, err := DecodeNetwork([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("DecodeNetwork(%s) = %v; want an error about %q", bad, err, tc.why)
		}
	}
}

func TestDecodeHostRejects(t *testing.T) {
	good := `{"Host":"h1","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
	if _, err := DecodeHost([]byte(good)); err != nil {
		t.Fatalf("good host record rejected: %v", err)
	}
	for _, tc := range []struct{ from, to, why string }{
		{`"Host":"h1"`, `"Host":""`, "empty Host"},
		{`"Host":"h1"`, `"Host":"h1_"`, "expected a hostname"},
		{`"Host":"h1"`, `"Host":"h1","host":"h2"`, "differ only in case"},
		{`"Host":"h1"`, `"Host":"h1","Host":"h2"`, `duplicate key "Host"`},
		{`"VNI":1`, `"VNI":1,"Pad":"` + strings.Repeat("x", MaxValueSize) + `"`, "over the size cap"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if _, err := DecodeHost([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("DecodeHost(%.200s) = %v; want an error about %q", bad, err, tc.why)
		}
	}
}

// FuzzDecodeNetwork: DecodeNetwork never panics, and whatever it accepts is a
// usable record that encodes and decodes to itself.
func FuzzDecodeNetwork(f *testing.F) {
	f.Add([]byte(`{"Host":"h1","Network":"app1","NetworkID":"abc","Subnet":"198.19.1.0/24","Gateway":"198.19.1.1","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`))
	f.Add([]byte(`{"Host":"h1","Network":"app1","Subnet":"10.5.35.0/24","PublicIP":"127.0.0.1","VtepMAC":"c6:a7:e4:a5:a1:dd"}`))
	f.Add([]byte(`{"Subnet":"0.0.0.0/0","Extra":[1,2,3]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"VNI":-1,"VtepMAC":"C6-A7-E4-A5-A1-DD"}`))
	f.Add([]byte(`{"Host":"h1","Network":"app1","Subnet":"198.19.1.0/24","subnet":"0.0.0.0/0","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNetwork(b)
		if err != nil {
			return
		}
		if !n.Subnet.Addr().Is4() || n.Subnet.Masked() != n.Subnet {
			t.Fatalf("accepted subnet %s", n.Subnet)
		}
		if _, err := ValidPublicIP(n.PublicIP.String()); err != nil {
			t.Fatalf("accepted PublicIP %s: %v", n.PublicIP, err)
		}
		if len(n.VtepMAC) != 6 || n.VtepMAC[0]&1 == 1 {
			t.Fatalf("accepted VtepMAC %s", n.VtepMAC)
		}
		if n.Host == "" || strings.Contains(n.Host, "/") || n.Network == "" || strings.Contains(n.Network, "/") {
			t.Fatalf("accepted Host %q Network %q", n.Host, n.Network)
		}
		enc, err := EncodeNetwork(n)
		if err != nil {
			t.Fatalf("accepted %s but cannot encode it: %v", b, err)
		}
		back, err := DecodeNetwork(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		if !reflect.DeepEqual(back.Record(), n.Record()) {
			t.Fatalf("round trip changed the record: %+v -> %+v", n.Record(), back.Record())
		}
		again, _ := json.Marshal(back.Record())
		if string(again) != string(enc) {
			t.Fatalf("encoding not stable: %s vs %s", enc, again)
		}
	})
}

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		label string
		want  []string
		err   string
	}{
		{label: "a", want: []string{"a"}},
		{label: "web,db", want: []string{"db", "web"}},
		{label: " b , a,b ", want: []string{"a", "b"}},
		{label: "A-b_c.9", want: []string{"A-b_c.9"}},
		{label: strings.Repeat("x", 63), want: []string{strings.Repeat("x", 63)}},
		{label: strings.Repeat("x", 64), err: "1 to 63"},
		{label: "", err: "1 to 63"},
		{label: "a,,b", err: "1 to 63"},
		{label: "a b", err: "only letters"},
		{label: "a/b", err: "only letters"},
		{label: "grüne", err: "only letters"},
		{label: "a,b*", err: "only letters"},
	} {
		got, err := ParseGroups(tc.label)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), GroupLabel) {
				t.Errorf("ParseGroups(%q) = %q, %v; want error with %q", tc.label, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseGroups(%q) = %q, %v; want %q", tc.label, got, err, tc.want)
		}
	}
}

func TestNetworkRecordGroups(t *testing.T) {
	base := `{"Host":"h1","Network":"app","NetworkID":"x","Subnet":"10.5.35.0/24","Gateway":"","PublicIP":"198.51.100.1","VtepMAC":"aa:bb:cc:00:00:01","VNI":1`
	n, err := DecodeNetwork([]byte(base + `,"Groups":["web","db","web"]}`))
	if err != nil || !reflect.DeepEqual(n.Groups, []string{"db", "web"}) {
		t.Fatalf("decode groups: %q, %v", n.Groups, err)
	}
	enc, err := EncodeNetwork(n)
	if err != nil || !strings.Contains(string(enc), `"Groups":["db","web"]`) {
		t.Fatalf("encode groups: %s, %v", enc, err)
	}
	n.Groups = nil
	if enc, _ := EncodeNetwork(n); strings.Contains(string(enc), "Groups") {
		t.Errorf("ungrouped record carries Groups: %s", enc)
	}
	if _, err := DecodeNetwork([]byte(base + `,"Groups":["bad name"]}`)); err == nil || !strings.Contains(err.Error(), "Groups") {
		t.Errorf("bad group accepted: %v", err)
	}
	// Older records (no field) decode as ungrouped.
	if n, err := DecodeNetwork([]byte(base + `}`)); err != nil || n.Groups != nil {
		t.Errorf("record without Groups: %q, %v", n.Groups, err)
	}
}
