package strictjson

import "testing"

type benchLease struct {
	PublicIP    string
	PublicIPv6  *string
	BackendType string
	BackendData map[string]any
}

// BenchmarkUnmarshal decodes a flanneld-shaped lease value, the most common
// value the registrar reads (10,000 of them at a cold start at scale).
func BenchmarkUnmarshal(b *testing.B) {
	in := []byte(`{"PublicIP":"198.51.100.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`)
	b.ReportAllocs()
	for b.Loop() {
		var l benchLease
		if err := Unmarshal(in, &l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck is the strict check alone, without the decode after it.
func BenchmarkCheck(b *testing.B) {
	in := []byte(`{"PublicIP":"198.51.100.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`)
	fields := FieldNames(&benchLease{})
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(in, fields); err != nil {
			b.Fatal(err)
		}
	}
}
