package state

import (
	"net/netip"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

func hostNames(hs []registry.HostRecord) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Host)
	}
	return out
}

// The host record indexes (by VTEP MAC, and PublicIPs as known VTEP
// addresses) follow puts, updates, deletes and a re-list, and ignore the
// MAC's spelling.
func TestHostIndexes(t *testing.T) {
	s := New()
	in := netip.MustParsePrefix("198.51.100.0/24")
	s.PutHost(registry.HostRecord{Host: "b", PublicIP: "198.51.100.7", VtepMAC: "AA:BB:CC:00:00:01"}, "t")
	s.PutHost(registry.HostRecord{Host: "a", PublicIP: "192.0.2.9", VtepMAC: "aa:bb:cc:00:00:01"}, "t")
	if got := hostNames(s.HostsWithMAC(mustMAC("aa:bb:cc:00:00:01"))); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("HostsWithMAC = %v, want [a b]", got)
	}
	if ip, ok := s.PublicIPIn(in); !ok || ip != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("PublicIPIn = %v %v, want 198.51.100.7", ip, ok)
	}
	// b moves to another MAC and address: the old entries go.
	s.PutHost(registry.HostRecord{Host: "b", PublicIP: "203.0.113.1", VtepMAC: "aa:bb:cc:00:00:02"}, "t")
	if got := hostNames(s.HostsWithMAC(mustMAC("aa:bb:cc:00:00:01"))); len(got) != 1 || got[0] != "a" {
		t.Fatalf("after the update HostsWithMAC = %v, want [a]", got)
	}
	if ip, ok := s.PublicIPIn(in); ok {
		t.Fatalf("after the update PublicIPIn = %v, want none", ip)
	}
	s.DeleteHost("a", "t")
	if got := s.HostsWithMAC(mustMAC("aa:bb:cc:00:00:01")); len(got) != 0 {
		t.Fatalf("after the delete HostsWithMAC = %v, want none", hostNames(got))
	}
	// A re-list replaces both indexes; a bad MAC or address is not indexed.
	s.ReplaceEtcd(EtcdView{Hosts: map[string]registry.HostRecord{
		"c": {Host: "c", PublicIP: "198.51.100.8", VtepMAC: "aa:bb:cc:00:00:03"},
		"d": {Host: "d", PublicIP: "nope", VtepMAC: "nope"},
	}}, "t")
	if got := s.HostsWithMAC(mustMAC("aa:bb:cc:00:00:02")); len(got) != 0 {
		t.Fatalf("after the re-list HostsWithMAC(b's) = %v, want none", hostNames(got))
	}
	if got := hostNames(s.HostsWithMAC(mustMAC("aa:bb:cc:00:00:03"))); len(got) != 1 || got[0] != "c" {
		t.Fatalf("after the re-list HostsWithMAC = %v, want [c]", got)
	}
	if ip, ok := s.PublicIPIn(in); !ok || ip != netip.MustParseAddr("198.51.100.8") {
		t.Fatalf("after the re-list PublicIPIn = %v %v, want 198.51.100.8", ip, ok)
	}
	if _, ok := s.PublicIPIn(netip.MustParsePrefix("203.0.113.0/24")); ok {
		t.Fatal("after the re-list b's old address is still known")
	}
}

// The lease indexes keep several leases behind one PublicIP or MAC, and
// dropping one keeps the others.
func TestLeaseIndexSeveral(t *testing.T) {
	s := New()
	ip := netip.MustParseAddr("198.51.100.9")
	m := mustMAC("aa:bb:cc:00:00:09")
	lease := func(p string) Lease {
		return Lease{Subnet: netip.MustParsePrefix(p), Raw: flannel.NewVXLAN(ip, 1, m), PublicIP: ip, VNI: 1, VtepMAC: m}
	}
	s.PutLease(lease("10.1.2.0/24"), "t")
	s.PutLease(lease("10.1.1.0/24"), "t")
	s.PutLease(lease("10.1.1.0/24"), "t") // again: no duplicate entry
	if got := s.SubnetsWithMAC(m.String()); len(got) != 2 {
		t.Fatalf("SubnetsWithMAC = %v, want 2 subnets", got)
	}
	if l, ok := s.VXLANLeaseWithPublicIP(ip); !ok || l.Subnet.String() != "10.1.1.0/24" {
		t.Fatalf("VXLANLeaseWithPublicIP = %v %v, want the lowest, 10.1.1.0/24", l.Subnet, ok)
	}
	s.DeleteLease(netip.MustParsePrefix("10.1.1.0/24"), "t")
	if l, ok := s.VXLANLeaseWithMAC(m); !ok || l.Subnet.String() != "10.1.2.0/24" {
		t.Fatalf("after the delete VXLANLeaseWithMAC = %v %v, want 10.1.2.0/24", l.Subnet, ok)
	}
	s.DeleteLease(netip.MustParsePrefix("10.1.2.0/24"), "t")
	if _, ok := s.VXLANLeaseWithPublicIP(ip); ok {
		t.Fatal("after both deletes a lease is still indexed")
	}
}
