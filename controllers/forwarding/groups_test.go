package forwarding

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

var self = overlay.Self{Host: "h1", PublicIP: netip.MustParseAddr("198.51.100.1")}

func hostIP(n byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, n}) }
func hostMAC(n byte) net.HardwareAddr {
	return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, n}
}

// rec is a record of host h<n> for network name.
func rec(n byte, name, cidr string, groups ...string) state.KeyedNetwork {
	host := "h" + string('0'+rune(n))
	return state.KeyedNetwork{Key: "/flannel/network/subnets/" + host + "/" + name, Network: registry.Network{
		Host: host, Network: name, Subnet: netip.MustParsePrefix(cidr),
		PublicIP: hostIP(n), VtepMAC: hostMAC(n), VNI: 1, Groups: groups,
	}}
}

func flannelLease(n byte, cidr string) state.Lease {
	return state.Lease{Subnet: netip.MustParsePrefix(cidr), Raw: flannel.NewVXLAN(hostIP(n), 1, hostMAC(n)),
		PublicIP: hostIP(n), VNI: 1, VtepMAC: hostMAC(n)}
}

func grouped(name, cidr string, groups ...string) state.LocalNetwork {
	n := local(name, cidr)
	n.Groups = groups
	return n
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, c := range s {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

func specs(rules []Rule) []string {
	var out []string
	for _, r := range rules {
		tag := ""
		switch {
		case r.Early:
			tag = "early "
		case r.Drop:
			tag = "drop "
		}
		out = append(out, tag+strings.Join(r.Spec, " "))
	}
	return out
}

func TestDerive(t *testing.T) {
	long := strings.Repeat("g", 40)
	for _, tc := range []struct {
		name      string
		snap      Snapshot
		filter    []string
		sets      map[string][]netip.Prefix
		noNATDiff bool
	}{
		{
			name: "ungrouped: as before, no set, no conntrack rule",
			snap: Snapshot{Local: []state.LocalNetwork{local("a", "198.18.1.0/24")},
				Records: []state.KeyedNetwork{rec(2, "b", "198.18.2.0/24", "web")}},
			filter: []string{
				"-d 198.18.1.0/24 -i flannel.1 -j ACCEPT",
				"-s 198.18.1.0/24 -o flannel.1 -j ACCEPT",
			},
			sets: map[string][]netip.Prefix{},
		},
		{
			name: "grouped: members from local networks and routed grouped records only",
			snap: Snapshot{
				Local: []state.LocalNetwork{grouped("a", "198.18.1.0/24", "web"), local("m", "198.18.9.0/24")},
				Records: []state.KeyedNetwork{
					rec(1, "a", "198.18.1.0/24", "web"),       // our own record: local, no remote member
					rec(2, "b", "198.18.2.0/24", "web"),       // member
					rec(3, "c", "198.18.3.0/24", "db"),        // other group, not local: no set
					rec(3, "d", "198.18.4.0/24"),              // ungrouped
					rec(2, "f", "198.18.6.0/24", "web"),       // claimed by two hosts: conflict, not routed
					rec(3, "f", "198.18.6.0/24", "web"),       //
					rec(4, "x", "198.18.1.0/24", "web"),       // claims our local subnet: not routed
					rec(2, "e", "198.18.7.0/25", "web", "db"), // member through one of two groups
				},
				Leases: []state.Lease{flannelLease(2, "10.5.2.0/24"), flannelLease(3, "198.18.2.0/24")},
			},
			filter: []string{
				"early -i flannel.1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
				"early -d 198.18.1.0/24 -i flannel.1 -m set --match-set FR-G-web src -j ACCEPT",
				"drop -d 198.18.1.0/24 -i flannel.1 -j DROP",
				"-s 198.18.1.0/24 -o flannel.1 -j ACCEPT",
				"-d 198.18.9.0/24 -i flannel.1 -j ACCEPT",
				"-s 198.18.9.0/24 -o flannel.1 -j ACCEPT",
			},
			sets: map[string][]netip.Prefix{"FR-G-web": prefixes("198.18.1.0/24", "198.18.2.0/24", "198.18.7.0/25")},
		},
		{
			name: "a network in two groups, one group with a long name, two grouped networks",
			snap: Snapshot{
				Local: []state.LocalNetwork{grouped("b", "198.18.12.0/24", "db"), grouped("a", "198.18.11.0/24", "db", long)},
				Records: []state.KeyedNetwork{
					rec(2, "p", "198.18.21.0/24", long), rec(2, "q", "198.18.22.0/24", "db"), rec(3, "r", "198.18.23.0/24", "other"),
				},
			},
			filter: []string{
				"early -i flannel.1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
				"early -d 198.18.11.0/24 -i flannel.1 -m set --match-set FR-G-db src -j ACCEPT",
				"early -d 198.18.11.0/24 -i flannel.1 -m set --match-set " + SetName(long) + " src -j ACCEPT",
				"early -d 198.18.12.0/24 -i flannel.1 -m set --match-set FR-G-db src -j ACCEPT",
				"drop -d 198.18.11.0/24 -i flannel.1 -j DROP",
				"drop -d 198.18.12.0/24 -i flannel.1 -j DROP",
				"-s 198.18.11.0/24 -o flannel.1 -j ACCEPT",
				"-s 198.18.12.0/24 -o flannel.1 -j ACCEPT",
			},
			sets: map[string][]netip.Prefix{
				"FR-G-db":     prefixes("198.18.11.0/24", "198.18.12.0/24", "198.18.22.0/24"),
				SetName(long): prefixes("198.18.11.0/24", "198.18.21.0/24"),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.snap.VXLAN, tc.snap.Self = DefaultVXLAN, self
			var first Want
			// Any order of the inputs gives the same result.
			for i := range 40 {
				r := rand.New(rand.NewPCG(uint64(i), 11))
				s := tc.snap
				s.Local, s.Records, s.Leases = slices.Clone(s.Local), slices.Clone(s.Records), slices.Clone(s.Leases)
				r.Shuffle(len(s.Local), func(i, j int) { s.Local[i], s.Local[j] = s.Local[j], s.Local[i] })
				r.Shuffle(len(s.Records), func(i, j int) { s.Records[i], s.Records[j] = s.Records[j], s.Records[i] })
				r.Shuffle(len(s.Leases), func(i, j int) { s.Leases[i], s.Leases[j] = s.Leases[j], s.Leases[i] })
				w := Derive(s)
				if i == 0 {
					first = w
					if got := specs(w.Filter); !slices.Equal(got, tc.filter) {
						t.Fatalf("filter:\n got %q\nwant %q", got, tc.filter)
					}
					if !reflect.DeepEqual(w.Sets, tc.sets) {
						t.Fatalf("sets:\n got %v\nwant %v", w.Sets, tc.sets)
					}
					for name, g := range w.GroupOf {
						if SetName(g) != name {
							t.Errorf("GroupOf[%s] = %s", name, g)
						}
					}
					continue
				}
				if !reflect.DeepEqual(w, first) {
					t.Fatalf("order %d gave\n%+v\nwant\n%+v", i, w, first)
				}
			}
		})
	}
}

func TestSetName(t *testing.T) {
	if got := SetName("web"); got != "FR-G-web" {
		t.Errorf("SetName(web) = %s", got)
	}
	max := strings.Repeat("a", 26)
	if got := SetName(max); got != "FR-G-"+max {
		t.Errorf("26 characters fit: %s", got)
	}
	seen := map[string]string{}
	for _, g := range []string{strings.Repeat("a", 27), strings.Repeat("a", 63), strings.Repeat("a", 62) + "b", strings.Repeat("a", 27) + "-x"} {
		n := SetName(g)
		if len(n) != 31 || !strings.HasPrefix(n, SetPrefix+strings.Repeat("a", 17)+"~") {
			t.Errorf("SetName(%s) = %s (%d)", g, n, len(n))
		}
		if other, dup := seen[n]; dup {
			t.Errorf("%s and %s both named %s", g, other, n)
		}
		seen[n] = g
		if registry.ValidGroup(strings.TrimPrefix(n, SetPrefix)) == nil {
			t.Errorf("hashed name %s is also a valid plain group name", n)
		}
	}
}

// groupsController is a controller on fakes with a store holding records.
func groupsController(t *testing.T) (*Controller, *state.Store, *fakeIPT, *fakeSets) {
	t.Helper()
	f, sets := newFake(), newFakeSets()
	dockerLike(f)
	s := state.New()
	s.SetLink(state.Link{Name: "flannel.1", Present: true, Local: self.PublicIP}, "test")
	c, err := New(s, Options{IPTables: f, IPSets: sets, Host: self.Host})
	if err != nil {
		t.Fatal(err)
	}
	return c, s, f, sets
}

func putRec(s *state.Store, r state.KeyedNetwork) { s.PutNetwork(r.Key, r.Network, "test") }

func TestGroupsIncremental(t *testing.T) {
	c, s, f, sets := groupsController(t)
	s.ReplaceLocal([]state.LocalNetwork{grouped("a", "198.18.1.0/24", "web"), local("m", "198.18.9.0/24")}, "test")
	putRec(s, rec(2, "b", "198.18.2.0/24", "web"))
	reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, strings.Join([]string{
		"-d 198.18.1.0/24 -i flannel.1 -m set --match-set FR-G-web src -j ACCEPT",
		"-i flannel.1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-d 198.18.1.0/24 -i flannel.1 -j DROP",
		"-s 198.18.1.0/24 -o flannel.1 -j ACCEPT",
		"-d 198.18.9.0/24 -i flannel.1 -j ACCEPT",
		"-s 198.18.9.0/24 -o flannel.1 -j ACCEPT",
	}, "; "))
	if !reflect.DeepEqual(sets.sets, map[string][]netip.Prefix{"FR-G-web": prefixes("198.18.1.0/24", "198.18.2.0/24")}) {
		t.Fatalf("sets: %v", sets.sets)
	}
	converged := func(step string) {
		t.Helper()
		iw, sw := f.writes, sets.writes
		if ch := reconcileOK(t, c); len(ch) != 0 || f.writes != iw || sets.writes != sw {
			t.Fatalf("%s: converged reconcile changed %q", step, ch)
		}
	}
	converged("first")

	// A remote network joins the group: one add, nothing else.
	putRec(s, rec(3, "c", "198.18.3.0/24", "web", "db"))
	if ch := reconcileOK(t, c); !slices.Equal(ch, []string{"ipset add FR-G-web 198.18.3.0/24"}) {
		t.Errorf("join: %q", ch)
	}
	converged("after join")
	// A remote network goes: one del.
	s.DeleteNetwork(rec(2, "b", "198.18.2.0/24").Key, "test")
	if ch := reconcileOK(t, c); !slices.Equal(ch, []string{"ipset del FR-G-web 198.18.2.0/24"}) {
		t.Errorf("leave: %q", ch)
	}
	// A second local network in a new group: a set, its accept first, its
	// drop appended.
	s.PutLocal(grouped("z", "198.18.20.0/24", "db"), "test")
	ch := reconcileOK(t, c)
	want := []string{
		"ipset create FR-G-db hash:net (group db)",
		"ipset add FR-G-db 198.18.3.0/24",
		"ipset add FR-G-db 198.18.20.0/24",
		"iptables -t filter -I " + FilterChain + " 1 -d 198.18.20.0/24 -i flannel.1 -m set --match-set FR-G-db src -j ACCEPT",
		"iptables -t filter -A " + FilterChain + " -d 198.18.20.0/24 -i flannel.1 -j DROP",
		"iptables -t filter -A " + FilterChain + " -s 198.18.20.0/24 -o flannel.1 -j ACCEPT",
		"iptables -t nat -A " + NATChain + " -s 198.18.20.0/24 -o flannel.1 -j ACCEPT",
	}
	if !slices.Equal(ch, want) {
		t.Errorf("new grouped network:\n got %q\nwant %q", ch, want)
	}
	converged("two groups")

	// A DROP found above an ACCEPT it must follow is moved below.
	rules := f.tables["filter"][FilterChain]
	i := slices.IndexFunc(rules, func(r []string) bool { return slices.Contains(r, "DROP") && slices.Contains(r, "198.18.1.0/24") })
	drop := rules[i]
	f.tables["filter"][FilterChain] = append([][]string{drop}, slices.Delete(slices.Clone(rules), i, i+1)...)
	ch = reconcileOK(t, c)
	dropSpec := strings.Fields("-d 198.18.1.0/24 -i flannel.1 -j DROP")
	delPrefix := "iptables -t filter -D " + FilterChain + " "
	if len(ch) != 2 || ch[0] != "iptables -t filter -A "+FilterChain+" "+strings.Join(dropSpec, " ") ||
		!strings.HasPrefix(ch[1], delPrefix) || ruleKey(strings.Fields(strings.TrimPrefix(ch[1], delPrefix))) != ruleKey(dropSpec) {
		t.Errorf("misplaced drop: %q", ch)
	}
	got := f.tables["filter"][FilterChain]
	lastEarly, firstDrop := -1, len(got)
	for i, r := range got {
		if slices.Contains(r, "DROP") {
			firstDrop = min(firstDrop, i)
		} else if slices.Contains(r, "set") || slices.Contains(r, "conntrack") {
			lastEarly = i
		}
	}
	if firstDrop < lastEarly {
		t.Errorf("a DROP before an early ACCEPT: %s", f.dump("filter", FilterChain))
	}
	converged("after reorder")

	// Groups dropped from every local network: rules back to the ungrouped
	// shape, sets destroyed.
	s.ReplaceLocal([]state.LocalNetwork{local("a", "198.18.1.0/24"), local("m", "198.18.9.0/24")}, "test")
	reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, strings.Join([]string{
		"-s 198.18.1.0/24 -o flannel.1 -j ACCEPT",
		"-d 198.18.9.0/24 -i flannel.1 -j ACCEPT",
		"-s 198.18.9.0/24 -o flannel.1 -j ACCEPT",
		"-d 198.18.1.0/24 -i flannel.1 -j ACCEPT",
	}, "; "))
	if len(sets.sets) != 0 {
		t.Errorf("sets left: %v", sets.sets)
	}
	converged("ungrouped")
}

func TestGroupSetsNotDestroyedWhileRulesFail(t *testing.T) {
	c, s, f, sets := groupsController(t)
	s.ReplaceLocal([]state.LocalNetwork{grouped("a", "198.18.1.0/24", "web")}, "test")
	reconcileOK(t, c)
	// Someone else's set with our prefix is ours by name: it is removed.
	// Another's set without it is never touched.
	sets.sets["FR-G-stale"] = prefixes("10.9.0.0/16")
	sets.sets["KUBE-X"] = prefixes("10.8.0.0/16")
	delete(f.tables["filter"], DockerUser) // the filter sync fails: no destroy
	f.user["filter"] = slices.DeleteFunc(f.user["filter"], func(c string) bool { return c == DockerUser })
	s.ReplaceLocal(nil, "test")
	if err := c.Reconcile(context.Background(), Key); err != nil {
		t.Logf("reconcile without DOCKER-USER: %v", err)
	}
	if _, ok := sets.sets["KUBE-X"]; !ok {
		t.Fatal("a foreign set was destroyed")
	}
	reconcileOK(t, c)
	if _, ok := sets.sets["FR-G-stale"]; ok || len(sets.sets) != 1 {
		t.Errorf("sets: %v", sets.sets)
	}
}

func TestGroupDrops(t *testing.T) {
	c, s, f, _ := groupsController(t)
	s.ReplaceLocal([]state.LocalNetwork{grouped("a", "198.18.1.0/24", "db", "web"), grouped("b", "198.18.2.0/24", "web"), local("m", "198.18.9.0/24")}, "test")
	reconcileOK(t, c)
	f.counters = map[string][2]uint64{
		"-d 198.18.1.0/24 -i flannel.1 -j DROP":   {3, 252},
		"-d 198.18.2.0/24 -i flannel.1 -j DROP":   {2, 120},
		"-d 198.18.9.0/24 -i flannel.1 -j ACCEPT": {50, 5000},
	}
	got, err := c.GroupDrops()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Counter{"db": {3, 252}, "web": {5, 372}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GroupDrops = %v, want %v", got, want)
	}
}

// One rule that iptables-restore refuses does not hold back the others:
// the batch falls back to one call per rule.
func TestBatchFallsBackPerRule(t *testing.T) {
	f := newFake()
	dockerLike(f)
	c, _ := newController(t, f, local("a", "10.5.1.0/24"), local("b", "10.5.2.0/24"))
	f.refuse = "10.5.2.0/24"
	ch := reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, "-d 10.5.1.0/24 -i flannel.1 -j ACCEPT; -s 10.5.1.0/24 -o flannel.1 -j ACCEPT; "+
		"-d 10.5.2.0/24 -i flannel.1 -j ACCEPT; -s 10.5.2.0/24 -o flannel.1 -j ACCEPT")
	if !slices.Contains(ch, "iptables -t filter -A "+FilterChain+" -d 10.5.2.0/24 -i flannel.1 -j ACCEPT") {
		t.Errorf("changes: %q", ch)
	}
}

type brokenSets struct{ *fakeSets }

func (brokenSets) IPSetNets(string) (map[string][]netip.Prefix, error) {
	return nil, errors.New("ipset: protocol not supported")
}

// Without ipset in the kernel, ungrouped networks keep their rules, and a
// grouped one fails closed (its DROP, no ACCEPT naming a missing set).
func TestWithoutIPSet(t *testing.T) {
	f := newFake()
	dockerLike(f)
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("a", "10.5.1.0/24")}, "test")
	c, err := New(s, Options{IPTables: f, IPSets: brokenSets{newFakeSets()}})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, "-d 10.5.1.0/24 -i flannel.1 -j ACCEPT; -s 10.5.1.0/24 -o flannel.1 -j ACCEPT")
	s.PutLocal(grouped("g", "10.5.2.0/24", "web"), "test")
	f.refuse = "--match-set" // iptables refuses a rule naming a missing set
	if err := c.Reconcile(context.Background(), Key); err == nil {
		t.Fatal("no error without ipset for a grouped network")
	}
	rules := f.dump("filter", FilterChain)
	if !strings.Contains(rules, "-d 10.5.2.0/24 -i flannel.1 -j DROP") || !strings.Contains(rules, "-d 10.5.1.0/24 -i flannel.1 -j ACCEPT") {
		t.Errorf("rules: %s", rules)
	}
}

// The trust boundary decides set membership as it decides routing: a
// hostile record claiming a group with a huge subnet, or a slice of another
// host's grouped network, joins no set.
func TestDeriveObeysTrustBoundary(t *testing.T) {
	store := state.New()
	records := []state.KeyedNetwork{
		rec(2, "b", "198.18.2.0/24", "web"),
		rec(6, "wide", "128.0.0.0/1", "web"),
		rec(6, "slice", "198.18.2.128/25", "web"),
	}
	for _, r := range records {
		store.PutNetwork(r.Key, r.Network, "test")
	}
	res := flannel.NewReservation("h2", "b")
	store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.18.2.0/24"), Raw: res, PublicIP: netip.IPv4Unspecified(),
		Reservation: &flannel.ReservationData{Host: "h2", Network: "b"}}, "test")
	store.SetUnderlay(state.Underlay{}, "test")
	p := &policy.Policy{Allowed: prefixes("198.18.0.0/15")}
	self := overlay.SelfOf("h1", hostIP(1), p, store)
	w := Derive(Snapshot{VXLAN: "flannel.1", Self: self, Local: []state.LocalNetwork{grouped("a", "198.18.1.0/24", "web")},
		Records: store.Networks(), Leases: store.Leases()})
	if got, want := w.Sets[SetName("web")], prefixes("198.18.1.0/24", "198.18.2.0/24"); !slices.Equal(got, want) {
		t.Fatalf("set web = %v, want %v", got, want)
	}
}
