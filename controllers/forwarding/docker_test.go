package forwarding_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/dockertest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	"github.com/flannel-registrar/flannel-registrar/watchers/docker"
)

func rulesOf(ns *testutil.Netns, table, chain string) ([]string, error) {
	out, err := ns.Try("iptables", "-t", table, "-S", chain)
	if err != nil {
		return nil, fmt.Errorf("iptables -t %s -S %s: %w: %s", table, chain, err, out)
	}
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	return rules, nil
}

// oursFirst checks that our jumps are the first rules of DOCKER-USER and
// POSTROUTING and that our chains hold exactly the rules for cidrs.
func oursFirst(ns *testutil.Netns, cidrs ...string) error {
	for _, j := range []struct{ table, parent, target string }{
		{"filter", forwarding.DockerUser, forwarding.FilterChain},
		{"nat", forwarding.PostRouting, forwarding.NATChain},
	} {
		rules, err := rulesOf(ns, j.table, j.parent)
		if err != nil {
			return err
		}
		if want := "-A " + j.parent + " -j " + j.target; len(rules) == 0 || rules[0] != want {
			return fmt.Errorf("%s %s does not start with %q: %q", j.table, j.parent, want, rules)
		}
	}
	fwd, err := rulesOf(ns, "filter", forwarding.FilterChain)
	if err != nil {
		return err
	}
	nat, err := rulesOf(ns, "nat", forwarding.NATChain)
	if err != nil {
		return err
	}
	if len(fwd) != 2*len(cidrs) || len(nat) != len(cidrs) {
		return fmt.Errorf("our chains: %q %q, want rules for %v", fwd, nat, cidrs)
	}
	for _, c := range cidrs {
		if !strings.Contains(strings.Join(fwd, "\n"), "-d "+c+" -i flannel.1 -j ACCEPT") ||
			!strings.Contains(strings.Join(nat, "\n"), "-s "+c+" -o flannel.1 -j ACCEPT") {
			return fmt.Errorf("no rules for %s: %q %q", c, fwd, nat)
		}
	}
	return nil
}

// TestRealDockerdRules wires the Docker watcher, the store and the
// forwarding controller like the daemon does, on a real dockerd in a
// namespace: our jumps stay first although Docker rewrites its rules on
// network create and on restart, and no resync is needed for that.
func TestRealDockerdRules(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "dockerd")
	ns := testutil.NewNetns(t, "frdk")
	d := dockertest.Start(t, ns)

	store := state.New()
	c, err := forwarding.New(store, forwarding.Options{IPTables: forwarding.NewNsIPT(t, ns), IPSets: netlinkxtest.Handle(t, ns)})
	if err != nil {
		t.Fatal(err)
	}
	mgr := reconcile.NewManager(0, slog.New(slog.DiscardHandler))
	mgr.Add(c, reconcile.Options{})
	store.Subscribe(func(ev state.Event) {
		for _, k := range c.KeysFor(ev) {
			mgr.Enqueue(forwarding.Name, k, ev.Trigger)
		}
	})
	w := docker.New(d.Client(), store, docker.Options{
		OnRulesChanged: func(trigger string) { mgr.Enqueue(forwarding.Name, forwarding.Key, trigger) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { mgr.Run(ctx); done <- struct{}{} }()
	go func() { _ = w.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	testutil.Eventually(t, 20*time.Second, func() error { return oursFirst(ns) })

	d.Docker(t, "network", "create", "--subnet", "198.18.20.0/24", "app1")
	testutil.Eventually(t, 10*time.Second, func() error { return oursFirst(ns, "198.18.20.0/24") })
	nat, _ := rulesOf(ns, "nat", forwarding.PostRouting)
	if !strings.Contains(strings.Join(nat, "\n"), "-s 198.18.20.0/24 ! -o br-") {
		t.Fatalf("Docker's MASQUERADE for app1 missing: %q", nat)
	}

	// Converged with Docker's rules: a resync changes nothing.
	rctx, rec := reconcile.WithRecorder(ctx)
	if err := c.Reconcile(rctx, forwarding.Key); err != nil || len(rec.Changes()) != 0 {
		t.Fatalf("resync over converged rules: err %v, changes %q", err, rec.Changes())
	}

	d.Docker(t, "network", "create", "--subnet", "198.18.21.0/24", "app2")
	d.Docker(t, "network", "rm", "app1")
	testutil.Eventually(t, 10*time.Second, func() error { return oursFirst(ns, "198.18.21.0/24") })

	d.Restart()
	testutil.Eventually(t, 30*time.Second, func() error { return oursFirst(ns, "198.18.21.0/24") })
	t.Logf("forwarding runner: %+v, iptables writes %d", mgr.Stats()[forwarding.Name], c.Writes())
}
