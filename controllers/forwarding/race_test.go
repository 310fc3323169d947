package forwarding

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// foreignChains are where Docker inserts its rules at the top, and where our
// jumps live.
var foreignChains = []struct{ table, chain string }{
	{"filter", DockerUser}, {"filter", Forward}, {"nat", PostRouting},
}

// foreignRule is the n-th rule "Docker" inserts: unique, so that each one
// can be counted afterwards.
func foreignRule(n int) []string {
	return []string{"-s", fmt.Sprintf("10.254.%d.%d/32", n/250, n%250+1), "-j", "RETURN"}
}

// countForeign counts the foreign rules left in the namespace (each is
// inserted into every chain of foreignChains).
func countForeign(t *testing.T, ns *testutil.Netns) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, fc := range foreignChains {
		for _, r := range chainRules(t, ns, fc.table, fc.chain) {
			if strings.Contains(r, "-s 10.254.") {
				got[fc.table+"/"+fc.chain]++
			}
		}
	}
	return got
}

// racyIPT inserts a foreign rule at the top of every chain of foreignChains
// right after each table snapshot: exactly the window in which a delete by
// rule number would hit one of Docker's rules.
type racyIPT struct {
	*nsIPT
	t        *testing.T
	inserted int
}

func (r *racyIPT) ListTable(table string) ([]string, error) {
	lines, err := r.nsIPT.ListTable(table)
	for _, fc := range foreignChains {
		if fc.table == table {
			args := append([]string{"-t", fc.table, "-I", fc.chain, "1"}, foreignRule(r.inserted)...)
			r.ns.Run(r.t, "iptables", args...)
		}
	}
	if table == "nat" {
		r.inserted++
	}
	return lines, err
}

// messyStart makes a state in which a reconcile deletes in every chain: our
// jumps below Docker's rules and duplicated, a stale FORWARD jump, and rules
// in our chains that are no longer wanted.
func messyStart(t *testing.T, ns *testutil.Netns) {
	t.Helper()
	dockerDefaults(t, ns)
	for _, args := range [][]string{
		{"-N", FilterChain},
		{"-A", FilterChain, "-d", "198.18.99.0/24", "-i", "flannel.1", "-j", "ACCEPT"},
		{"-A", FilterChain, "-d", "198.18.5.0/24", "-i", "flannel.1", "-j", "ACCEPT"},
		{"-A", FilterChain, "-d", "198.18.5.0/24", "-i", "flannel.1", "-j", "ACCEPT"},
		{"-A", DockerUser, "-j", FilterChain},
		{"-A", DockerUser, "-o", "flannel.1", "-j", FilterChain},
		{"-I", Forward, "1", "-j", FilterChain},
		{"-t", "nat", "-N", NATChain},
		{"-t", "nat", "-A", PostRouting, "-j", NATChain},
		{"-t", "nat", "-A", PostRouting, "-j", NATChain},
	} {
		ns.Run(t, "iptables", args...)
	}
}

// wantConverged checks our chains and jumps exactly, and that Docker's
// original rules are all still there.
func wantConverged(t *testing.T, ns *testutil.Netns, cidrs ...string) {
	t.Helper()
	var fwd, nat []string
	for _, c := range cidrs {
		fwd = append(fwd, "-A "+FilterChain+" -d "+c+" -i flannel.1 -j ACCEPT", "-A "+FilterChain+" -s "+c+" -o flannel.1 -j ACCEPT")
		nat = append(nat, "-A "+NATChain+" -s "+c+" -o flannel.1 -j ACCEPT")
	}
	wantRules(t, ns, "filter", FilterChain, fwd...)
	wantRules(t, ns, "nat", NATChain, nat...)
	without := func(table, chain string) []string {
		var out []string
		for _, r := range chainRules(t, ns, table, chain) {
			if !strings.Contains(r, "-s 10.254.") {
				out = append(out, r)
			}
		}
		return out
	}
	for _, c := range []struct {
		table, chain string
		want         []string
		oursFirst    bool
	}{
		{"filter", DockerUser, []string{"-A DOCKER-USER -j " + FilterChain, "-A DOCKER-USER -j RETURN"}, true},
		{"filter", Forward, []string{"-A FORWARD -j DOCKER-USER", "-A FORWARD -o br-app1 -j ACCEPT"}, false},
		{"nat", PostRouting, []string{"-A POSTROUTING -j " + NATChain, "-A POSTROUTING -s 198.18.5.0/24 ! -o br-app1 -j MASQUERADE"}, true},
	} {
		if got := without(c.table, c.chain); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s %s without the foreign rules:\n got %q\nwant %q", c.table, c.chain, got, c.want)
		}
		if rules := chainRules(t, ns, c.table, c.chain); c.oursFirst && (len(rules) == 0 || rules[0] != c.want[0]) {
			t.Errorf("%s %s: our jump is not first: %q", c.table, c.chain, rules[:min(3, len(rules))])
		}
	}
}

// TestDeletesBySpecWhileDockerInserts is the regression test of issue 11 B3:
// Docker inserts a rule at the top of each chain between our snapshot and
// our deletes (every reconcile, deterministically). Deleting by number from
// the snapshot would delete one of those; by spec, none is lost.
func TestDeletesBySpecWhileDockerInserts(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "frdk")
	messyStart(t, ns)
	racy := &racyIPT{nsIPT: newNsIPT(t, ns), t: t}
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "198.18.5.0/24")}, "test")
	c, err := New(s, Options{IPTables: racy, IPSets: netlinkxtest.Handle(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	// A reconcile that moved our jumps leaves them first in its snapshot's
	// view only: the next one finds them pushed down again and moves them.
	var deletes int
	for i := range 4 {
		for _, ch := range reconcileOK(t, c) {
			if strings.Contains(ch, " -D ") {
				deletes++
			}
		}
		if i == 1 {
			s.PutLocal(local("app2", "198.18.6.0/24"), "test")
		}
		if i == 2 {
			s.DeleteLocal("app2", "test")
		}
	}
	if deletes < 8 {
		t.Fatalf("only %d deletes: the test does not exercise them", deletes)
	}
	for _, fc := range foreignChains {
		if n := countForeign(t, ns)[fc.table+"/"+fc.chain]; n != racy.inserted {
			t.Errorf("%s %s: %d of the %d foreign rules left", fc.table, fc.chain, n, racy.inserted)
		}
	}
	// Docker quiet again: one reconcile converges, the next writes nothing.
	c.ipt = racy.nsIPT
	reconcileOK(t, c)
	wantConverged(t, ns, "198.18.5.0/24")
	if changes := reconcileOK(t, c); len(changes) != 0 {
		t.Errorf("converged reconcile changed %q", changes)
	}
}

// TestReconcilesWhileAnotherProcessInserts runs the controller against real
// concurrency: another goroutine keeps inserting rules at the top of
// Docker's chains with the iptables command (another process, as Docker
// does), while the controller reconciles changing sets of networks. No
// foreign rule is ever deleted, and ours converge once it stops.
func TestReconcilesWhileAnotherProcessInserts(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "frdk")
	messyStart(t, ns)
	s := state.New()
	c, err := New(s, Options{IPTables: newNsIPT(t, ns), IPSets: netlinkxtest.Handle(t, ns)})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var inserted int
	var insertErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil && n < 1000; n++ {
			for _, fc := range foreignChains {
				args := append([]string{"-w", "-t", fc.table, "-I", fc.chain, "1"}, foreignRule(n)...)
				if out, err := ns.Try("iptables", args...); err != nil {
					insertErr = fmt.Errorf("iptables %q: %w: %s", args, err, out)
					return
				}
			}
			inserted = n + 1
		}
	}()
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)

	sets := [][]state.LocalNetwork{
		{local("app1", "198.18.5.0/24")},
		{local("app1", "198.18.5.0/24"), local("app2", "198.18.6.0/24"), local("app3", "198.18.7.0/24")},
		{local("app3", "198.18.7.0/24")},
		{},
	}
	var changes int
	for i := range 40 {
		s.ReplaceLocal(sets[i%len(sets)], "test")
		changes += len(reconcileOK(t, c))
	}
	stop()
	if insertErr != nil {
		t.Fatal(insertErr)
	}
	if inserted < 5 || changes < 40 {
		t.Fatalf("too little concurrency to prove anything: %d foreign inserts, %d changes of ours", inserted, changes)
	}
	for _, fc := range foreignChains {
		if n := countForeign(t, ns)[fc.table+"/"+fc.chain]; n != inserted {
			t.Errorf("%s %s: %d of the %d foreign rules left", fc.table, fc.chain, n, inserted)
		}
	}
	s.ReplaceLocal(sets[0], "test")
	reconcileOK(t, c)
	wantConverged(t, ns, "198.18.5.0/24")
	if again := reconcileOK(t, c); len(again) != 0 {
		t.Errorf("converged reconcile changed %q", again)
	}
	t.Logf("%d foreign inserts per chain during 40 reconciles making %d changes", inserted, changes)
}
