package forwarding

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// nsIPT runs every iptables call inside a test namespace (the iptables
// child process inherits the locked thread's namespace).
type nsIPT struct {
	ns  *testutil.Netns
	ipt *GoIPTables
}

func newNsIPT(t testing.TB, ns *testutil.Netns) *nsIPT {
	t.Helper()
	testutil.RequireBinary(t, "iptables")
	ipt, err := NewIPTables()
	if err != nil {
		t.Fatalf("iptables: %v", err)
	}
	return &nsIPT{ns: ns, ipt: ipt}
}

func (n *nsIPT) ListTable(table string) (out []string, err error) {
	err = n.ns.Do(func() error { out, err = n.ipt.ListTable(table); return err })
	return out, err
}

func (n *nsIPT) NewChain(table, chain string) error {
	return n.ns.Do(func() error { return n.ipt.NewChain(table, chain) })
}

func (n *nsIPT) Insert(table, chain string, pos int, spec ...string) error {
	return n.ns.Do(func() error { return n.ipt.Insert(table, chain, pos, spec...) })
}

func (n *nsIPT) Append(table, chain string, spec ...string) error {
	return n.ns.Do(func() error { return n.ipt.Append(table, chain, spec...) })
}

func (n *nsIPT) Delete(table, chain string, spec ...string) error {
	return n.ns.Do(func() error { return n.ipt.Delete(table, chain, spec...) })
}

func (n *nsIPT) ListWithCounters(table, chain string) (out []string, err error) {
	err = n.ns.Do(func() error { out, err = n.ipt.ListWithCounters(table, chain); return err })
	return out, err
}

func (n *nsIPT) Restore(table string, lines []string) error {
	return n.ns.Do(func() error { return n.ipt.Restore(table, lines) })
}

func (n *nsIPT) ClearAndDeleteChain(table, chain string) error {
	return n.ns.Do(func() error { return n.ipt.ClearAndDeleteChain(table, chain) })
}

// chainRules returns "iptables -S chain" of the namespace, rules only.
func chainRules(t *testing.T, ns *testutil.Netns, table, chain string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(ns.Run(t, "iptables", "-t", table, "-S", chain), "\n") {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

func wantRules(t *testing.T, ns *testutil.Netns, table, chain string, want ...string) {
	t.Helper()
	if got := chainRules(t, ns, table, chain); !slices.Equal(got, want) {
		t.Errorf("iptables -t %s -S %s:\n got %q\nwant %q", table, chain, got, want)
	}
}

// dockerDefaults sets up what dockerd 20.10 makes: FORWARD policy DROP,
// DOCKER-USER jumped first, a MASQUERADE per bridge network.
func dockerDefaults(t *testing.T, ns *testutil.Netns) {
	t.Helper()
	for _, args := range [][]string{
		{"-P", "FORWARD", "DROP"},
		{"-N", "DOCKER-USER"},
		{"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"},
		{"-A", "FORWARD", "-o", "br-app1", "-j", "ACCEPT"},
		{"-t", "nat", "-A", "POSTROUTING", "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE"},
	} {
		ns.Run(t, "iptables", args...)
	}
}

func TestRealIptablesInNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "frdk")
	dockerDefaults(t, ns)
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "198.18.5.0/24"), local("app2", "198.18.6.0/24")}, "test")
	c, err := New(s, Options{IPTables: newNsIPT(t, ns), IPSets: netlinkxtest.Handle(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reconcileOK(t, c)

	fwd := func(cidr string) []string {
		return []string{
			"-A " + FilterChain + " -d " + cidr + " -i flannel.1 -j ACCEPT",
			"-A " + FilterChain + " -s " + cidr + " -o flannel.1 -j ACCEPT",
		}
	}
	nat := func(cidr string) string { return "-A " + NATChain + " -s " + cidr + " -o flannel.1 -j ACCEPT" }
	check := func(step string, cidrs ...string) {
		t.Helper()
		var wantFwd, wantNat []string
		for _, c := range cidrs {
			wantFwd = append(wantFwd, fwd(c)...)
			wantNat = append(wantNat, nat(c))
		}
		wantRules(t, ns, "filter", FilterChain, wantFwd...)
		wantRules(t, ns, "nat", NATChain, wantNat...)
		wantRules(t, ns, "filter", DockerUser, "-A DOCKER-USER -j "+FilterChain, "-A DOCKER-USER -j RETURN")
		wantRules(t, ns, "filter", Forward, "-A FORWARD -j DOCKER-USER", "-A FORWARD -o br-app1 -j ACCEPT")
		wantRules(t, ns, "nat", PostRouting, "-A POSTROUTING -j "+NATChain, "-A POSTROUTING -s 198.18.5.0/24 ! -o br-app1 -j MASQUERADE")
		if pol := ns.Run(t, "iptables", "-S", "FORWARD"); !strings.Contains(pol, "-P FORWARD DROP") {
			t.Errorf("%s: FORWARD policy changed: %s", step, pol)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	check("first reconcile", "198.18.5.0/24", "198.18.6.0/24")

	// Converged: a resync writes nothing (also proves our rule specs match
	// iptables' own printing).
	before := c.Writes()
	if changes := reconcileOK(t, c); len(changes) != 0 || c.Writes() != before {
		t.Fatalf("converged reconcile changed %v", changes)
	}

	s.DeleteLocal("app2", "test")
	reconcileOK(t, c)
	check("network removed", "198.18.5.0/24")

	ns.Run(t, "iptables", "-F", FilterChain)
	ns.Run(t, "iptables", "-t", "nat", "-F", NATChain)
	reconcileOK(t, c)
	check("after flush", "198.18.5.0/24")

	ns.Run(t, "iptables", "-D", DockerUser, "-j", FilterChain)
	ns.Run(t, "iptables", "-t", "nat", "-D", PostRouting, "-j", NATChain)
	reconcileOK(t, c)
	check("after jumps deleted", "198.18.5.0/24")

	// Docker re-adds its MASQUERADE at the top (as on network create).
	ns.Run(t, "iptables", "-t", "nat", "-D", PostRouting, "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE")
	ns.Run(t, "iptables", "-t", "nat", "-I", PostRouting, "1", "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE")
	reconcileOK(t, c)
	check("after Docker inserted first", "198.18.5.0/24")

	// Chains deleted altogether.
	ns.Run(t, "iptables", "-D", DockerUser, "-j", FilterChain)
	ns.Run(t, "iptables", "-F", FilterChain)
	ns.Run(t, "iptables", "-X", FilterChain)
	reconcileOK(t, c)
	check("after chain deleted", "198.18.5.0/24")

	if err := c.Remove(ctx); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if all := ns.Run(t, "iptables-save"); strings.Contains(all, "FLANNEL-REGISTRAR") {
		t.Errorf("left after Remove:\n%s", all)
	}
	wantRules(t, ns, "filter", DockerUser, "-A DOCKER-USER -j RETURN")
}

func TestRealIptablesWithoutDockerUsesForward(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "frdk")
	ns.Run(t, "iptables", "-P", "FORWARD", "DROP")
	ns.Run(t, "iptables", "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT")
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "198.18.5.0/24")}, "test")
	c, err := New(s, Options{IPTables: newNsIPT(t, ns), IPSets: netlinkxtest.Handle(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)
	wantRules(t, ns, "filter", Forward, "-A FORWARD -j "+FilterChain, "-A FORWARD -i eth9 -j ACCEPT")

	// Docker starts later and makes DOCKER-USER: our jump moves there.
	ns.Run(t, "iptables", "-N", DockerUser)
	ns.Run(t, "iptables", "-I", Forward, "1", "-j", DockerUser)
	reconcileOK(t, c)
	wantRules(t, ns, "filter", DockerUser, "-A DOCKER-USER -j "+FilterChain)
	wantRules(t, ns, "filter", Forward, "-A FORWARD -j DOCKER-USER", "-A FORWARD -i eth9 -j ACCEPT")
}

// BenchmarkConvergedReconcile is the cost of one resync of a converged host
// with Docker's defaults and 10 networks (it execs iptables; zero writes).
func BenchmarkConvergedReconcile(b *testing.B) {
	testutil.RequireRoot(b)
	ns := testutil.NewNetns(b, "frdk")
	for _, args := range [][]string{
		{"-P", "FORWARD", "DROP"}, {"-N", "DOCKER-USER"}, {"-A", "FORWARD", "-j", "DOCKER-USER"},
	} {
		ns.Run(b, "iptables", args...)
	}
	var nets []state.LocalNetwork
	for i := range 10 {
		nets = append(nets, local(fmt.Sprintf("app%d", i), fmt.Sprintf("198.18.%d.0/24", i)))
	}
	s := state.New()
	s.ReplaceLocal(nets, "bench")
	c, err := New(s, Options{IPTables: newNsIPT(b, ns), IPSets: netlinkxtest.Handle(b, ns)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Reconcile(ctx, Key); err != nil {
		b.Fatal(err)
	}
	writes := c.Writes()
	b.ResetTimer()
	for range b.N {
		if err := c.Reconcile(ctx, Key); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if c.Writes() != writes {
		b.Fatalf("converged reconciles wrote %d times", c.Writes()-writes)
	}
}
