// Package firewall reports changes to the iptables tables the forwarding
// controller keeps its chains and jumps in (filter and nat, IPv4), so that
// the wiring can queue the forwarding controller and a rule deleted by hand
// (or by another tool) is restored within about a second, not at the next
// resync. It has two modes:
//
//   - notifications (iptables-nft, Debian's and Docker's default): it
//     subscribes to nf_tables notifications (NETLINK_NETFILTER, group
//     NFNLGRP_NFTABLES) and reports each committed transaction that touched
//     a watched table, once per table. A transaction committed by one of our
//     own iptables-restore runs (Options.Own) is an echo of our write and is
//     dropped. Subscriptions are re-established with backoff when they
//     break (ENOBUFS: the kernel dropped notifications), and every
//     (re)subscription reports a change, since anything may have changed
//     while unsubscribed;
//   - polling (iptables-legacy, whose changes the kernel does not
//     announce): every PollInterval it calls Options.Probe, a cheap
//     fingerprint of our jumps and chains, and reports when it differs from
//     the previous one.
//
// It only reports; the wiring decides what a change concerns. A reported
// change of a converged host costs the forwarding controller one read of
// each table and no write, so echoes that slip through cannot loop.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/resubscribe"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// DefaultTables are the IPv4 tables watched by default.
var DefaultTables = []string{"filter", "nat"}

// Change is one reported change.
type Change struct {
	// Table is the table that changed; "" when anything may have changed
	// (a new subscription, the first poll).
	Table string
	// Trigger says what happened, e.g.
	// "firewall:rule-del filter/DOCKER-USER by iptables[1234]".
	Trigger string
}

// Options configure a Watcher.
type Options struct {
	// Handle is the namespace to watch (notifications mode); required
	// unless Poll.
	Handle *netlinkx.Handle
	// Poll selects polling Probe instead of notifications.
	Poll bool
	// Probe fingerprints our iptables state (polling mode; required then).
	Probe func() (string, error)
	// PollInterval is the polling period (default 1s).
	PollInterval time.Duration
	// Tables are the IPv4 tables of interest (default DefaultTables).
	Tables []string
	// OnChange receives every change; required. It runs on the watcher's
	// goroutine, so it must not block for long.
	OnChange func(Change)
	// Own tells whether the process that committed a transaction is one of
	// our own iptables runs (its echo is dropped). May be nil.
	Own func(pid uint32) bool
	// OnBroken reports a broken subscription (or a failing probe) and the
	// delay before the next attempt. May be nil.
	OnBroken func(err error, retryIn time.Duration)
	// MinBackoff and MaxBackoff bound the delay before re-subscribing
	// (defaults 100ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// ReceiveBuffer is the subscription socket's buffer (default 1 MiB:
	// Docker rewriting its rules sends bursts).
	ReceiveBuffer int
}

// Stats are the watcher's counters.
type Stats struct {
	Subscriptions uint64 // successful (re)subscriptions (notifications mode)
	Notifications uint64 // nf_tables messages received
	Echoes        uint64 // transactions of ours dropped
	Polls         uint64 // probes run (polling mode)
	Reported      uint64 // changes reported
}

// Watcher reports changes of the watched tables.
type Watcher struct {
	o Options

	subs, notes, echoes, polls, reported atomic.Uint64
}

// New returns a watcher; Run starts it.
func New(o Options) *Watcher {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if len(o.Tables) == 0 {
		o.Tables = DefaultTables
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.ReceiveBuffer <= 0 {
		o.ReceiveBuffer = 1 << 20
	}
	return &Watcher{o: o}
}

// Mode is "notifications" or "polling".
func (w *Watcher) Mode() string {
	if w.o.Poll {
		return "polling"
	}
	return "notifications"
}

// Stats returns the watcher's counters.
func (w *Watcher) Stats() Stats {
	return Stats{Subscriptions: w.subs.Load(), Notifications: w.notes.Load(), Echoes: w.echoes.Load(),
		Polls: w.polls.Load(), Reported: w.reported.Load()}
}

// Run watches until ctx is done; it returns only then, after the
// subscription's goroutines have ended.
func (w *Watcher) Run(ctx context.Context) error {
	if w.o.Poll {
		return w.poll(ctx)
	}
	if w.o.Handle == nil {
		return errors.New("firewall watcher: no netlink handle")
	}
	resubscribe.Loop(ctx, w.o.MinBackoff, w.o.MaxBackoff, w.session, w.o.OnBroken)
	return nil
}

// session subscribes and reports until the subscription breaks or ctx is
// done; it returns after its closer goroutine has ended.
func (w *Watcher) session(ctx context.Context) error {
	sub, err := w.o.Handle.SubscribeNFTables(w.o.ReceiveBuffer)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Closing the socket is what ends a blocked Receive.
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		sub.Close()
	})
	defer func() { close(stop); wg.Wait() }()
	w.subs.Add(1)
	w.report(Change{Trigger: "firewall:subscribed"})
	var tx transaction
	for {
		evs, err := sub.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("nf_tables notifications lost: %w", err)
			}
			return err
		}
		for _, e := range evs {
			w.notes.Add(1)
			w.onEvent(&tx, e)
		}
	}
}

// transaction gathers the watched tables one transaction changed, until
// its NFT_MSG_NEWGEN says who committed it.
type transaction struct {
	tables   []string
	triggers []string
}

func (w *Watcher) onEvent(tx *transaction, e netlinkx.NFTEvent) {
	if e.Gen {
		if len(tx.tables) > 0 {
			if w.o.Own != nil && w.o.Own(e.PID) {
				w.echoes.Add(1)
			} else {
				for i, t := range tx.tables {
					w.report(Change{Table: t, Trigger: fmt.Sprintf("%s by %s[%d]", tx.triggers[i], e.Comm, e.PID)})
				}
			}
		}
		*tx = transaction{}
		return
	}
	if !w.watched(e) {
		return
	}
	if slices.Contains(tx.tables, e.Table) {
		return
	}
	trigger := "firewall:" + e.Verb()
	if e.Table != "" {
		trigger += " " + e.Table
	}
	if e.Chain != "" {
		trigger += "/" + e.Chain
	}
	tx.tables = append(tx.tables, e.Table)
	tx.triggers = append(tx.triggers, trigger)
}

// watched: an IPv4 change of a watched table, or of a table the message
// does not name (then it may be one of them).
func (w *Watcher) watched(e netlinkx.NFTEvent) bool {
	if e.Family != unix.NFPROTO_IPV4 && e.Family != unix.NFPROTO_INET {
		return false
	}
	return e.Table == "" || slices.Contains(w.o.Tables, e.Table)
}

// poll probes every PollInterval and reports when the fingerprint changed.
func (w *Watcher) poll(ctx context.Context) error {
	if w.o.Probe == nil {
		return errors.New("firewall watcher: polling without a probe")
	}
	t := time.NewTicker(w.o.PollInterval)
	defer t.Stop()
	last, ok := "", false
	for {
		fp, err := w.o.Probe()
		w.polls.Add(1)
		switch {
		case err != nil:
			if w.o.OnBroken != nil {
				w.o.OnBroken(fmt.Errorf("probe iptables: %w", err), w.o.PollInterval)
			}
		case !ok:
			last, ok = fp, true
			w.report(Change{Trigger: "firewall:polling"})
		case fp != last:
			last = fp
			w.report(Change{Trigger: "firewall:poll changed"})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *Watcher) report(c Change) {
	w.reported.Add(1)
	w.o.OnChange(c)
}
