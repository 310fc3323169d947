package state

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
)

// VTEPMACs lists every MAC a record or a vxlan lease names, once, sorted,
// and follows deletes; a reservation names none.
func TestVTEPMACs(t *testing.T) {
	s := New()
	m1, m2 := mustMAC("aa:bb:cc:00:00:01"), mustMAC("aa:bb:cc:00:00:02")
	r := netRec("h", "n", "198.19.1.0/24")
	r.VtepMAC = m2
	s.PutNetwork("/p/h/n", r, "t")
	s.PutLease(Lease{Subnet: netip.MustParsePrefix("198.19.2.0/24"), Raw: flannel.NewVXLAN(netip.MustParseAddr("198.51.100.1"), 1, m1),
		PublicIP: netip.MustParseAddr("198.51.100.1"), VNI: 1, VtepMAC: m1}, "t")
	s.PutLease(Lease{Subnet: netip.MustParsePrefix("198.19.1.0/24"), Raw: flannel.NewVXLAN(netip.MustParseAddr("198.51.100.2"), 1, m2),
		PublicIP: netip.MustParseAddr("198.51.100.2"), VNI: 1, VtepMAC: m2}, "t")
	s.PutLease(Lease{Subnet: netip.MustParsePrefix("198.19.3.0/24"), Raw: flannel.NewReservation("h", "x"), PublicIP: netip.IPv4Unspecified()}, "t")
	if got, want := s.VTEPMACs(), []string{m1.String(), m2.String()}; !slices.Equal(got, want) {
		t.Fatalf("VTEPMACs = %v, want %v", got, want)
	}
	subnets := func() []string {
		var out []string
		for _, p := range s.Subnets() {
			out = append(out, p.String())
		}
		slices.Sort(out)
		return out
	}
	// 198.19.1.0/24 has a record and a lease: once.
	if got, want := subnets(), []string{"198.19.1.0/24", "198.19.2.0/24", "198.19.3.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("Subnets = %v, want %v", got, want)
	}
	s.DeleteNetwork("/p/h/n", "t")
	s.DeleteLease(netip.MustParsePrefix("198.19.1.0/24"), "t")
	if got, want := s.VTEPMACs(), []string{m1.String()}; !slices.Equal(got, want) {
		t.Fatalf("after deletes VTEPMACs = %v, want %v", got, want)
	}
	if got, want := subnets(), []string{"198.19.2.0/24", "198.19.3.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("after deletes Subnets = %v, want %v", got, want)
	}
}
