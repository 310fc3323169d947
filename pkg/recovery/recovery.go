// Package recovery decides when to restart the flanneld container: the
// guarded ladder the original tool promised (restart the flannel container,
// with a cooldown and a daily cap) and never wired up. The decision is a
// pure state machine over observed faults and a clock, so every rule is
// unit-tested; the caller does the restart and logs each decision.
//
// Faults it acts on (the caller observes them): the VXLAN device is
// missing, or this host's flanneld lease is gone from etcd. flanneld v0.27.4
// does not recreate a deleted flannel.1 and traffic to and from the host
// stops until flanneld restarts, so a restart is the fix. A fault must last
// Grace first (flanneld itself recreates the device at start, and a lease
// renewal can race a read); then at most one restart per Cooldown and at
// most DailyCap restarts in any 24 hours. Docker itself is never restarted.
package recovery

import (
	"time"
)

// Action is what the guard decided.
type Action string

// Actions. ActionNone and ActionWait are not logged; each other one is,
// once per fault.
const (
	ActionNone            Action = "none"             // healthy
	ActionWait            Action = "wait"             // fault seen, within the grace period
	ActionRestart         Action = "restart"          // restart the container now
	ActionSkippedCooldown Action = "skipped_cooldown" // would restart, but the last restart is too recent
	ActionSkippedCap      Action = "skipped_cap"      // would restart, but the daily cap is reached
)

// Options are the guard's limits.
type Options struct {
	Grace    time.Duration
	Cooldown time.Duration
	DailyCap int
}

// Decision is one evaluation.
type Decision struct {
	Action Action
	Reason string        // the fault, e.g. "VXLAN device flannel.1 missing"
	For    time.Duration // how long the fault has lasted
	// New is true the first time this action is decided for this fault:
	// the caller logs and counts only new decisions.
	New bool
}

// Guard is the state machine. Not safe for concurrent use.
type Guard struct {
	opts Options

	faultSince time.Time // zero: healthy
	reason     string
	decided    Action      // last logged action of the current fault
	restarts   []time.Time // restarts in the last 24 h
}

// New returns a guard.
func New(o Options) *Guard { return &Guard{opts: o} }

// Observe takes the current fault ("" when healthy) at now and decides.
func (g *Guard) Observe(now time.Time, fault string) Decision {
	if fault == "" {
		g.faultSince, g.reason, g.decided = time.Time{}, "", ""
		return Decision{Action: ActionNone}
	}
	if g.faultSince.IsZero() || fault != g.reason {
		// A new fault, or another one: its grace starts now.
		if g.faultSince.IsZero() {
			g.faultSince = now
		}
		g.reason, g.decided = fault, ""
	}
	d := Decision{Reason: fault, For: now.Sub(g.faultSince)}
	g.prune(now)
	switch {
	case d.For < g.opts.Grace:
		d.Action = ActionWait
	case len(g.restarts) > 0 && now.Sub(g.restarts[len(g.restarts)-1]) < g.opts.Cooldown:
		d.Action = ActionSkippedCooldown
	case len(g.restarts) >= g.opts.DailyCap:
		d.Action = ActionSkippedCap
	default:
		d.Action = ActionRestart
	}
	d.New = d.Action != ActionWait && d.Action != g.decided
	if d.New {
		g.decided = d.Action
	}
	if d.Action == ActionRestart {
		g.restarts = append(g.restarts, now)
		// After a restart the fault must outlast a new grace period: the
		// restarted flanneld needs time to recreate the device and lease.
		g.faultSince, g.decided = now, ""
	}
	return d
}

func (g *Guard) prune(now time.Time) {
	i := 0
	for i < len(g.restarts) && now.Sub(g.restarts[i]) >= 24*time.Hour {
		i++
	}
	g.restarts = g.restarts[i:]
}

// Status is the guard's state for reports.
type Status struct {
	Fault       string    `json:"fault,omitempty"`
	FaultSince  time.Time `json:"fault_since,omitzero"`
	LastRestart time.Time `json:"last_restart,omitzero"`
	Restarts24h int       `json:"restarts_24h"`
}

// Status reports the current fault and the recent restarts.
func (g *Guard) Status(now time.Time) Status {
	g.prune(now)
	s := Status{Fault: g.reason, FaultSince: g.faultSince, Restarts24h: len(g.restarts)}
	if n := len(g.restarts); n > 0 {
		s.LastRestart = g.restarts[n-1]
	}
	return s
}
