package state

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) add(ev Event) { r.mu.Lock(); r.evs = append(r.evs, ev); r.mu.Unlock() }
func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.evs
	r.evs = nil
	return out
}

func mustMAC(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func netRec(host, name, subnet string) registry.Network {
	return registry.Network{Host: host, Network: name, Subnet: netip.MustParsePrefix(subnet),
		PublicIP: netip.MustParseAddr("198.51.100.12"), VtepMAC: mustMAC("c6:a7:e4:a5:a1:dd"), VNI: 1}
}

func TestLocalEvents(t *testing.T) {
	s := New()
	var r recorder
	s.Subscribe(r.add)
	a := LocalNetwork{ID: "1", Name: "app1", Subnet: netip.MustParsePrefix("198.19.1.0/24"), Bridge: "br-1"}
	s.PutLocal(a, "docker:create app1")
	s.PutLocal(a, "docker:create app1") // unchanged: no event
	evs := r.take()
	if len(evs) != 1 || evs[0].Kind != KindLocal || evs[0].Key != "app1" || evs[0].Old != nil || !localEqual(evs[0].New.(LocalNetwork), a) || evs[0].Trigger != "docker:create app1" {
		t.Fatalf("put: got %+v", evs)
	}
	b := LocalNetwork{ID: "2", Name: "app2", Subnet: netip.MustParsePrefix("198.19.2.0/24"), Bridge: "br-2"}
	s.ReplaceLocal([]LocalNetwork{b}, "docker:list")
	evs = r.take()
	if len(evs) != 2 {
		t.Fatalf("replace: want delete app1 + add app2, got %+v", evs)
	}
	if _, ok := s.Local("app1"); ok {
		t.Fatal("app1 still present after replace")
	}
	if got := s.LocalOverlapping(netip.MustParsePrefix("198.19.0.0/16")); len(got) != 1 || got[0].Name != "app2" {
		t.Fatalf("overlapping: %+v", got)
	}
	s.DeleteLocal("app2", "docker:destroy app2")
	s.DeleteLocal("app2", "docker:destroy app2")
	if evs := r.take(); len(evs) != 1 || evs[0].New != nil {
		t.Fatalf("delete: %+v", evs)
	}
}

func TestNetworkIndex(t *testing.T) {
	s := New()
	p := netip.MustParsePrefix("198.19.2.0/24")
	s.PutNetwork("/p/h2/app", netRec("h2", "app", "198.19.2.0/24"), "t")
	s.PutNetwork("/p/h3/app", netRec("h3", "app", "198.19.2.0/24"), "t")
	if got := s.NetworksBySubnet(p); len(got) != 2 || got[0].Key != "/p/h2/app" {
		t.Fatalf("by subnet: %+v", got)
	}
	// Moving a record to another subnet re-indexes it.
	s.PutNetwork("/p/h3/app", netRec("h3", "app", "198.19.3.0/24"), "t")
	if got := s.NetworksBySubnet(p); len(got) != 1 {
		t.Fatalf("after move: %+v", got)
	}
	s.DeleteNetwork("/p/h2/app", "t")
	if got := s.NetworksBySubnet(p); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
	s.ReplaceEtcd(EtcdView{Networks: map[string]registry.Network{"/p/h4/x": netRec("h4", "x", "198.19.2.0/24")}}, "etcd:list")
	if got := s.NetworksBySubnet(p); len(got) != 1 || got[0].Host != "h4" {
		t.Fatalf("after replace: %+v", got)
	}
	if got := s.NetworksBySubnet(netip.MustParsePrefix("198.19.3.0/24")); len(got) != 0 {
		t.Fatalf("replace kept stale index: %+v", got)
	}
}

// Replaying the same set of changes in any order gives the same final
// snapshot and ReplaceEtcd emits events only for real differences.
func TestReplaceEtcdOrderIndependent(t *testing.T) {
	leases := map[netip.Prefix]Lease{}
	nets := map[string]registry.Network{}
	for i := range 50 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 0}), 24)
		leases[p] = Lease{Subnet: p, Raw: flannel.NewReservation("h", "n"), PublicIP: netip.MustParseAddr("0.0.0.0")}
		nets["/p/h/n"+p.Addr().String()] = netRec("h", "n", p.String())
	}
	build := func(seed uint64) *Store {
		s := New()
		keys := make([]string, 0, len(nets))
		for k := range nets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		r := rand.New(rand.NewPCG(seed, seed))
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		for _, k := range keys {
			s.PutNetwork(k, nets[k], "t")
			s.PutLease(leases[nets[k].Subnet], "t")
		}
		return s
	}
	a, b := build(1), build(2)
	if !slices.EqualFunc(a.Networks(), b.Networks(), func(x, y KeyedNetwork) bool { return x.Key == y.Key && networkEqual(x.Network, y.Network) }) {
		t.Fatal("network order dependence")
	}
	if !slices.EqualFunc(a.Leases(), b.Leases(), leaseEqual) {
		t.Fatal("lease order dependence")
	}
	var r recorder
	a.Subscribe(r.add)
	a.ReplaceEtcd(EtcdView{Networks: nets, Leases: leases}, "etcd:relist")
	if evs := r.take(); len(evs) != 0 {
		t.Fatalf("relist of identical content emitted %d events", len(evs))
	}
}

func TestLinkAndSynced(t *testing.T) {
	s := New()
	var r recorder
	s.Subscribe(r.add)
	l := Link{Name: "flannel.1", Present: true, MAC: mustMAC("c6:a7:e4:a5:a1:dd"), Local: netip.MustParseAddr("198.51.100.11")}
	s.SetLink(l, "netlink")
	s.SetLink(Link{Name: "flannel.1", Present: true, MAC: mustMAC("c6:a7:e4:a5:a1:dd"), Local: netip.MustParseAddr("198.51.100.11")}, "netlink")
	s.SetSynced("docker", "docker:list")
	s.SetSynced("docker", "docker:list")
	evs := r.take()
	if len(evs) != 2 || evs[0].Kind != KindLink || evs[1].Kind != KindSynced {
		t.Fatalf("events: %+v", evs)
	}
	if !s.Synced("docker") || s.Synced("etcd") {
		t.Fatal("synced flags wrong")
	}
}

// The vxlan lease index follows puts, moves, deletes and relists, and never
// holds reservations or leases of other backends.
func TestVXLANLeaseIndex(t *testing.T) {
	s := New()
	m1, m2 := mustMAC("aa:bb:cc:00:00:01"), mustMAC("aa:bb:cc:00:00:02")
	ip1, ip2 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	vx := func(p string, ip netip.Addr, mac net.HardwareAddr) Lease {
		return Lease{Subnet: netip.MustParsePrefix(p), Raw: flannel.NewVXLAN(ip, 1, mac), PublicIP: ip, VNI: 1, VtepMAC: mac}
	}
	check := func(step string, mac net.HardwareAddr, ip netip.Addr, want string) {
		t.Helper()
		for name, get := range map[string]func() (Lease, bool){
			"mac": func() (Lease, bool) { return s.VXLANLeaseWithMAC(mac) },
			"ip":  func() (Lease, bool) { return s.VXLANLeaseWithPublicIP(ip) },
		} {
			l, ok := get()
			switch {
			case want == "" && ok:
				t.Errorf("%s: by %s: got %s, want none", step, name, l.Subnet)
			case want != "" && (!ok || l.Subnet.String() != want):
				t.Errorf("%s: by %s: got %s %v, want %s", step, name, l.Subnet, ok, want)
			}
		}
	}
	check("empty", m1, ip1, "")
	if _, ok := s.VXLANLeaseWithMAC(nil); ok {
		t.Error("nil MAC found a lease")
	}
	res := Lease{Subnet: netip.MustParsePrefix("198.19.9.0/24"), Raw: flannel.NewReservation("h1", "app"), PublicIP: ip1}
	s.PutLease(res, "t")
	check("reservation only", m1, ip1, "")
	s.PutLease(vx("198.19.2.0/24", ip1, m1), "t")
	s.PutLease(vx("198.19.1.0/24", ip1, m1), "t")
	check("two leases", m1, ip1, "198.19.1.0/24")
	s.PutLease(vx("198.19.1.0/24", ip2, m2), "t") // moved to another host
	check("after move, host 1", m1, ip1, "198.19.2.0/24")
	check("after move, host 2", m2, ip2, "198.19.1.0/24")
	s.DeleteLease(netip.MustParsePrefix("198.19.2.0/24"), "t")
	check("after delete", m1, ip1, "")
	s.ReplaceEtcd(EtcdView{Leases: map[netip.Prefix]Lease{res.Subnet: res, netip.MustParsePrefix("198.19.3.0/24"): vx("198.19.3.0/24", ip1, m1)}}, "etcd:list")
	check("after relist, host 1", m1, ip1, "198.19.3.0/24")
	check("after relist, host 2", m2, ip2, "")
}
