package app

// This file: the firewall watcher (our iptables chains and jumps repaired
// within about a second of a change by hand, not at the next resync).

import (
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	fwwatch "github.com/flannel-registrar/flannel-registrar/watchers/firewall"
)

// firewallPollInterval is the polling period with iptables-legacy, whose
// changes the kernel does not announce: two "iptables -S" per period.
const firewallPollInterval = time.Second

// FirewallChanges queues the forwarding controller for every change the
// firewall watcher reports (the runner's queue coalesces them).
func FirewallChanges(q Enqueuer) func(fwwatch.Change) {
	return func(c fwwatch.Change) { q.Enqueue(forwarding.Name, forwarding.Key, c.Trigger) }
}

// buildFirewallWatcher picks the mode from the iptables in use: nf_tables
// notifications with iptables-nft, polling our fingerprint with
// iptables-legacy (or when the version cannot be read).
func (a *App) buildFirewallWatcher() {
	nft, err := a.ipt.NFTables()
	if err != nil {
		a.log.Warn("cannot tell iptables-nft from iptables-legacy; polling our iptables rules", "error", err.Error())
	}
	a.fwW = fwwatch.New(fwwatch.Options{
		Handle: a.nl, Poll: !nft, Probe: a.fwd.Fingerprint, PollInterval: firewallPollInterval,
		Own:      a.ipt.Ours,
		OnChange: FirewallChanges(a.mgr),
		OnBroken: func(err error, retryIn time.Duration) {
			a.log.Warn("firewall watch broken; retrying", "error", err.Error(), "retry_in", retryIn)
		},
	})
	a.log.Debug("watching iptables for changes to our rules", "mode", a.fwW.Mode())
}
