package forwarding

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	"github.com/flannel-registrar/flannel-registrar/watchers/firewall"
)

// driftLab is a namespace with Docker's defaults, the controller in a
// runner and the firewall watcher feeding it, as the daemon wires them.
type driftLab struct {
	ns     *testutil.Netns
	c      *Controller
	runner *reconcile.Runner
	w      *firewall.Watcher
}

func newDriftLab(t *testing.T, pollMode bool) *driftLab {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "frfw")
	dockerDefaults(t, ns)
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "198.18.5.0/24")}, "test")
	ipt := newNsIPT(t, ns)
	h := netlinkxtest.Handle(t, ns)
	if !pollMode {
		if nft, err := ipt.ipt.NFTables(); err != nil || !nft {
			t.Skipf("iptables is not iptables-nft (%v): no notifications to test", err)
		}
	}
	c, err := New(s, Options{IPTables: ipt, IPSets: h})
	if err != nil {
		t.Fatal(err)
	}
	l := &driftLab{ns: ns, c: c, runner: reconcile.NewRunner(c, reconcile.Options{})}
	l.w = firewall.New(firewall.Options{
		Handle: h, Poll: pollMode, PollInterval: 200 * time.Millisecond, Own: ipt.ipt.Ours,
		Probe: func() (fp string, err error) {
			err = ns.Do(func() error { fp, err = c.Fingerprint(); return err })
			return fp, err
		},
		OnChange: func(ch firewall.Change) { l.runner.Enqueue(Key, ch.Trigger) },
		OnBroken: func(err error, _ time.Duration) { t.Logf("firewall watcher: %v", err) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.runner.Run(ctx) })
	wg.Go(func() {
		if err := l.w.Run(ctx); err != nil {
			t.Errorf("watcher: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The watcher's first report (subscribed / first poll) converges the host.
	l.waitConverged(t, "start")
	// The rules can be seen in place before the reconcile that wrote them
	// has counted its last write: wait for it to end, so that tests
	// counting writes from here count none of the start's.
	if err := poll.Until(context.Background(), 5*time.Second, 5*time.Millisecond, func() error {
		if l.runner.Stats().Reconciles == 0 || l.runner.Len() != 0 {
			return fmt.Errorf("the start's reconcile has not ended: %+v, %d queued", l.runner.Stats(), l.runner.Len())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

var driftWant = map[[2]string][]string{
	{"filter", FilterChain}: {"-A " + FilterChain + " -d 198.18.5.0/24 -i flannel.1 -j ACCEPT", "-A " + FilterChain + " -s 198.18.5.0/24 -o flannel.1 -j ACCEPT"},
	{"filter", DockerUser}:  {"-A DOCKER-USER -j " + FilterChain, "-A DOCKER-USER -j RETURN"},
	{"nat", NATChain}:       {"-A " + NATChain + " -s 198.18.5.0/24 -o flannel.1 -j ACCEPT"},
	{"nat", PostRouting}:    {"-A POSTROUTING -j " + NATChain, "-A POSTROUTING -s 198.18.5.0/24 ! -o br-app1 -j MASQUERADE"},
}

func (l *driftLab) converged() error {
	for tc, want := range driftWant {
		out, err := l.ns.Try("iptables", "-t", tc[0], "-S", tc[1])
		if err != nil {
			return fmt.Errorf("iptables -t %s -S %s: %w: %s", tc[0], tc[1], err, out)
		}
		var got []string
		for _, line := range splitLines(out) {
			if len(line) > 3 && line[:3] == "-A " {
				got = append(got, line)
			}
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s %s: got %q, want %q", tc[0], tc[1], got, want)
		}
	}
	return nil
}

// waitConverged polls (deadline 5 s) until every rule is back and returns
// the time it took.
func (l *driftLab) waitConverged(t *testing.T, what string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := poll.Until(context.Background(), 5*time.Second, 5*time.Millisecond, l.converged); err != nil {
		t.Fatalf("%s: not repaired: %v", what, err)
	}
	return time.Since(start)
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// driftFaults are changes made by hand: each command is one iptables run,
// a batch one iptables-restore transaction (the repair is fast enough to
// land between two separate commands).
var driftFaults = []struct {
	name  string
	cmds  [][]string
	batch string
}{
	{"DOCKER-USER jump deleted", [][]string{{"-D", DockerUser, "-j", FilterChain}}, ""},
	{"filter chain flushed", [][]string{{"-F", FilterChain}}, ""},
	{"POSTROUTING jump deleted", [][]string{{"-t", "nat", "-D", PostRouting, "-j", NATChain}}, ""},
	{"nat chain flushed", [][]string{{"-t", "nat", "-F", NATChain}}, ""},
	{"filter chain deleted", nil, "*filter\n-D " + DockerUser + " -j " + FilterChain + "\n-F " + FilterChain + "\n-X " + FilterChain + "\nCOMMIT\n"},
	{"Docker inserted first in POSTROUTING", [][]string{
		{"-t", "nat", "-D", PostRouting, "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE"},
		{"-t", "nat", "-I", PostRouting, "1", "-s", "198.18.5.0/24", "!", "-o", "br-app1", "-j", "MASQUERADE"}}, ""},
}

func testDriftRepaired(t *testing.T, pollMode bool) {
	l := newDriftLab(t, pollMode)
	for _, f := range driftFaults {
		for _, args := range f.cmds {
			l.ns.Run(t, "iptables", args...)
		}
		if f.batch != "" {
			if err := l.ns.Do(func() error {
				cmd := exec.Command("iptables-restore", "--noflush")
				cmd.Stdin = strings.NewReader(f.batch)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%w: %s", err, out)
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: iptables-restore: %v", f.name, err)
			}
		}
		d := l.waitConverged(t, f.name)
		t.Logf("%s (%s): repaired in %s", f.name, l.w.Mode(), d.Round(time.Millisecond))
	}
	st := l.w.Stats()
	t.Logf("watcher %s: %+v; runner %+v", l.w.Mode(), st, l.runner.Stats())
	if !pollMode && st.Echoes == 0 {
		t.Errorf("no echo of our own iptables-restore batches recognised: %+v", st)
	}
}

// Rules of ours deleted by hand come back without a resync: nf_tables
// notifications (iptables-nft) queue the controller.
func TestDriftRepairedByNotifications(t *testing.T) { testDriftRepaired(t, false) }

// The same through the polling fallback (iptables-legacy announces nothing).
func TestDriftRepairedByPolling(t *testing.T) { testDriftRepaired(t, true) }

// Docker-like changes to other rules of the same tables are reported, cost
// a reconcile, and write nothing on a converged host (so neither they nor
// the echoes of our writes can loop).
func TestForeignRuleChangesWriteNothing(t *testing.T) {
	l := newDriftLab(t, false)
	writes, reported, reconciles := l.c.Writes(), l.w.Stats().Reported, l.runner.Stats().Reconciles
	for _, args := range [][]string{
		{"-A", Forward, "-o", "br-app2", "-j", "ACCEPT"},
		{"-N", "DOCKER-ISOLATION-STAGE-1"},
		{"-A", "DOCKER-ISOLATION-STAGE-1", "-i", "br-app2", "-j", "RETURN"},
		{"-t", "nat", "-A", PostRouting, "-s", "198.18.9.0/24", "!", "-o", "br-app2", "-j", "MASQUERADE"},
		{"-A", DockerUser, "-i", "eth5", "-j", "RETURN"}, // appended: below our jump
	} {
		l.ns.Run(t, "iptables", args...)
	}
	if err := poll.Until(context.Background(), 5*time.Second, 5*time.Millisecond, func() error {
		st, rs := l.w.Stats(), l.runner.Stats()
		if st.Reported < reported+5 || rs.Reconciles <= reconciles || l.runner.Len() != 0 {
			return fmt.Errorf("watcher %+v, runner %+v, queued %d", st, rs, l.runner.Len())
		}
		return nil
	}); err != nil {
		t.Fatalf("foreign changes not reported and reconciled: %v", err)
	}
	if got := l.c.Writes(); got != writes {
		t.Errorf("a converged host wrote %d iptables changes after foreign rule changes", got-writes)
	}
	t.Logf("5 foreign changes: %d reported, %d reconciles, 0 writes", l.w.Stats().Reported-reported, l.runner.Stats().Reconciles-reconciles)
}
