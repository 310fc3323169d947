package state

import (
	"net/netip"
	"testing"

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
