package forwarding

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

var initval = regexp.MustCompile(` initval 0x[0-9a-f]+`)

// ipsetSave returns "ipset save" of the namespace without the random
// initval of each set, and each set's members sorted (the kernel prints
// them in hash order).
func ipsetSave(t *testing.T, ns *testutil.Netns) []string {
	t.Helper()
	var out []string
	start := 0
	for _, l := range strings.Split(strings.TrimSpace(ns.Run(t, "ipset", "save")), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "create "):
			slices.Sort(out[start:])
			out = append(out, initval.ReplaceAllString(l, ""))
			start = len(out)
		default:
			out = append(out, l)
		}
	}
	slices.Sort(out[start:])
	return out
}

func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// newGroupsStore is a store whose VXLAN device has self's address, so
// records of other hosts are remote.
func newGroupsStore() *state.Store {
	s := state.New()
	s.SetLink(state.Link{Name: "flannel.1", Present: true, Local: self.PublicIP}, "test")
	return s
}

// TestRealGroupsRulesAndSets checks the exact kernel state for a snapshot
// (iptables -S of our chain, ipset save), that a converged resync writes
// nothing, that membership changes are single adds and dels, and that
// Remove leaves nothing of ours.
func TestRealGroupsRulesAndSets(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "ipset")
	ns := testutil.NewNetns(t, "frdk")
	dockerDefaults(t, ns)
	ns.Run(t, "ipset", "create", "OTHER-SET", "hash:ip") // not ours: never touched
	s := newGroupsStore()
	s.ReplaceLocal([]state.LocalNetwork{
		grouped("app1", "198.18.5.0/24", "web"),
		grouped("app2", "198.18.6.0/24", "db", "web"),
		local("open", "198.18.7.0/24"),
	}, "test")
	for _, r := range []state.KeyedNetwork{
		rec(2, "w2", "198.18.20.0/24", "web"),
		rec(3, "d3", "198.18.30.0/25", "db"),
		rec(3, "x3", "198.18.31.0/24", "other"),
		rec(3, "u3", "198.18.32.0/24"),
	} {
		putRec(s, r)
	}
	s.PutLease(flannelLease(2, "10.5.2.0/24"), "test")
	c, err := New(s, Options{IPTables: newNsIPT(t, ns), IPSets: netlinkxtest.Handle(t, ns), Host: self.Host})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)
	fwd := func(lines ...string) []string {
		for i, l := range lines {
			lines[i] = "-A " + FilterChain + " " + l
		}
		return lines
	}
	wantRules(t, ns, "filter", FilterChain, fwd(
		"-d 198.18.6.0/24 -i flannel.1 -m set --match-set FR-G-web src -j ACCEPT",
		"-d 198.18.6.0/24 -i flannel.1 -m set --match-set FR-G-db src -j ACCEPT",
		"-d 198.18.5.0/24 -i flannel.1 -m set --match-set FR-G-web src -j ACCEPT",
		"-i flannel.1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-d 198.18.5.0/24 -i flannel.1 -j DROP",
		"-d 198.18.6.0/24 -i flannel.1 -j DROP",
		"-s 198.18.5.0/24 -o flannel.1 -j ACCEPT",
		"-s 198.18.6.0/24 -o flannel.1 -j ACCEPT",
		"-d 198.18.7.0/24 -i flannel.1 -j ACCEPT",
		"-s 198.18.7.0/24 -o flannel.1 -j ACCEPT",
	)...)
	wantLines(t, "ipset save", ipsetSave(t, ns), []string{
		"create OTHER-SET hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12",
		"create FR-G-db hash:net family inet hashsize 1024 maxelem 65536",
		"add FR-G-db 198.18.30.0/25",
		"add FR-G-db 198.18.6.0/24",
		"create FR-G-web hash:net family inet hashsize 1024 maxelem 65536",
		"add FR-G-web 198.18.20.0/24",
		"add FR-G-web 198.18.5.0/24",
		"add FR-G-web 198.18.6.0/24",
	})
	if t.Failed() {
		t.FailNow()
	}
	before := c.Writes()
	if ch := reconcileOK(t, c); len(ch) != 0 || c.Writes() != before {
		t.Fatalf("converged reconcile changed %q", ch)
	}

	// Membership changes are one netlink write each.
	putRec(s, rec(3, "x3", "198.18.31.0/24", "other", "web"))
	s.DeleteNetwork(rec(2, "w2", "198.18.20.0/24").Key, "test")
	if ch := reconcileOK(t, c); !slices.Equal(ch, []string{"ipset add FR-G-web 198.18.31.0/24", "ipset del FR-G-web 198.18.20.0/24"}) {
		t.Errorf("membership change: %q", ch)
	}
	if got := ipsetSave(t, ns); !slices.Contains(got, "add FR-G-web 198.18.31.0/24") || slices.Contains(got, "add FR-G-web 198.18.20.0/24") {
		t.Errorf("after the change: %q", got)
	}
	if ch := reconcileOK(t, c); len(ch) != 0 {
		t.Fatalf("converged reconcile changed %q", ch)
	}

	// Counters read on demand: nothing dropped yet.
	drops, err := c.GroupDrops()
	if err != nil || len(drops) != 2 || drops["web"] != (Counter{}) || drops["db"] != (Counter{}) {
		t.Errorf("GroupDrops = %v, %v", drops, err)
	}

	// The last grouped network leaves the group db: its set goes.
	s.PutLocal(grouped("app2", "198.18.6.0/24", "web"), "test")
	reconcileOK(t, c)
	if got := ipsetSave(t, ns); slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "FR-G-db") }) {
		t.Errorf("FR-G-db left: %q", got)
	}

	if err := c.Remove(context.Background()); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if all := ns.Run(t, "iptables-save"); strings.Contains(all, "FLANNEL-REGISTRAR") || strings.Contains(all, "FR-G-") {
		t.Errorf("left after Remove:\n%s", all)
	}
	wantLines(t, "ipset save after Remove", ipsetSave(t, ns), []string{"create OTHER-SET hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12"})
}

// TestRealGroupsTraffic sends real packets through the host's forwarding
// (trafficLab): the peer speaks from addresses on its loopback that stand
// for remote networks, routed by the host over "flannel.1".
func TestRealGroupsTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	l := newTrafficLab(t)
	// 198.18.30.1: a network of group web; 198.18.31.1: of group db;
	// 198.18.200.2 (the peer's own): like flannel's subnet, ungrouped.
	for _, a := range []string{"198.18.30.1/32", "198.18.31.1/32"} {
		l.peer.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}
	for _, p := range []string{"198.18.30.0/24", "198.18.31.0/24"} {
		l.host.Run(t, "ip", "route", "add", p, "via", "198.18.200.2", "dev", "flannel.1")
	}
	s := newGroupsStore()
	s.ReplaceLocal([]state.LocalNetwork{grouped("app1", "198.18.5.0/24", "web")}, "test")
	putRec(s, rec(2, "w", "198.18.30.0/24", "web"))
	putRec(s, rec(3, "d", "198.18.31.0/24", "db"))
	c, err := New(s, Options{IPTables: newNsIPT(t, l.host), IPSets: netlinkxtest.Handle(t, l.host), Host: self.Host})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)

	pingFrom := func(src, dst string) error {
		out, err := l.peer.Try("busybox", "ping", "-c", "1", "-W", "1", "-I", src, dst)
		if err != nil {
			return &pingError{src, dst, out}
		}
		return nil
	}
	if err := pingFrom("198.18.30.1", "198.18.5.2"); err != nil {
		t.Errorf("same group: %v", err)
	}
	if err := pingFrom("198.18.31.1", "198.18.5.2"); err == nil {
		t.Error("another group reached into web")
	}
	if err := pingFrom("198.18.200.2", "198.18.5.2"); err == nil {
		t.Error("an ungrouped sender reached into web")
	}
	// The grouped network opens connections anywhere and gets the replies.
	for _, dst := range []string{"198.18.200.2", "198.18.31.1"} {
		if err := ping(l.ctr, dst); err != nil {
			t.Errorf("grouped → %s: %v", dst, err)
		}
	}
	drops, err := c.GroupDrops()
	if err != nil || drops["web"].Packets != 2 {
		t.Errorf("GroupDrops = %v, %v; want the 2 refused echo requests", drops, err)
	}

	// db's network joins web: reachable after one reconcile.
	putRec(s, rec(3, "d", "198.18.31.0/24", "db", "web"))
	reconcileOK(t, c)
	if err := pingFrom("198.18.31.1", "198.18.5.2"); err != nil {
		t.Errorf("after joining: %v", err)
	}
}

type pingError struct{ src, dst, out string }

func (e *pingError) Error() string { return "ping " + e.dst + " from " + e.src + ": " + e.out }
