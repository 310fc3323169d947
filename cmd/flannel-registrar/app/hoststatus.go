package app

// This file: this daemon's status entry in etcd, read by `status`.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/recovery"
)

// HostStatus is this host's entry under <ConfigPrefix>/_status/: the view
// from here that `status` shows for every host.
type HostStatus struct {
	Host    string       `json:"Host"`
	Updated time.Time    `json:"Updated"`
	Ready   bool         `json:"Ready"`
	Peers   []PeerStatus `json:"Peers"`
	// PeersOmitted counts the peers beyond maxListedPeers left out of
	// Peers (nil when every peer is listed); ReachableOmitted names the
	// reachable ones among them by PublicIP (17 bytes each, not 100).
	PeersOmitted     *PeerCounts    `json:"PeersOmitted,omitempty"`
	ReachableOmitted []string       `json:"ReachableOmitted,omitempty"`
	Recovery         RecoveryStatus `json:"Recovery"`
	Leftovers        int            `json:"Leftovers"`
}

// PeerStatus is one peer's reachability from the host of a HostStatus.
type PeerStatus struct {
	Host      string  `json:"Host,omitempty"`
	PublicIP  string  `json:"PublicIP"`
	Reachable *bool   `json:"Reachable"` // nil: not decided yet
	RTTMillis float64 `json:"RTTMillis,omitempty"`
}

// PeerCounts counts peers by reachability.
type PeerCounts struct {
	Reachable   int `json:"Reachable"`
	Unreachable int `json:"Unreachable"`
	Unknown     int `json:"Unknown"` // not decided yet
}

// maxListedPeers bounds the peers a status entry lists. Each takes about
// 100 bytes and etcd refuses a value over 1.5 MiB by default: at 10,000
// peers the full list was a megabyte, rewritten at every change of any
// peer. The unreachable and the undecided are listed first, so a cluster
// that works shows in full what is wrong and counts the rest.
const maxListedPeers = 1000

// RecoveryStatus is the recovery guard as seen by status.
type RecoveryStatus struct {
	Mode    string            `json:"Mode"`
	Actions map[string]uint64 `json:"Actions,omitempty"`
	recovery.Status
}

// hostStatus is this host's entry without its peers (statusPeers): the
// part that is cheap to build on every tick.
func (a *App) hostStatus() HostStatus {
	hs := HostStatus{Host: a.cfg.HostName, Ready: a.isSynced() && a.etcdAnswers() == nil && a.store.Link().Present}
	a.h.mu.Lock()
	hs.Recovery = RecoveryStatus{Mode: a.cfg.Recovery, Status: a.h.guard.Status(time.Now())}
	if len(a.h.actions) > 0 {
		hs.Recovery.Actions = map[string]uint64{}
		for k, v := range a.h.actions {
			hs.Recovery.Actions[k] = v
		}
	}
	hs.Leftovers = len(a.h.leftovers)
	a.h.mu.Unlock()
	return hs
}

// peerGen is the prober's generation: it moves when a peer comes, goes or
// changes reachability, not with round-trip times (0 without a prober).
func (a *App) peerGen() uint64 {
	if a.h.prober == nil {
		return 0
	}
	return a.h.prober.Generation()
}

// statusPeers is every peer's reachability as the status entry shows it:
// all of them, or, beyond maxListedPeers, the first by rank (unreachable,
// undecided, reachable) and the counts of the others.
func (a *App) statusPeers() ([]PeerStatus, *PeerCounts, []string) {
	states := a.peerStates()
	out := make([]PeerStatus, 0, len(states))
	for _, p := range states {
		ps := PeerStatus{Host: p.Host, PublicIP: p.Key}
		if p.Probed {
			r := p.Reachable
			ps.Reachable = &r
			if r {
				ps.RTTMillis = float64(p.RTT.Microseconds()) / 1000
			}
		}
		out = append(out, ps)
	}
	return listPeers(out, maxListedPeers)
}

// listPeers keeps at most limit peers, ranked unreachable, undecided,
// reachable (stable within a rank), counts the ones left out and names the
// reachable ones among them.
func listPeers(ps []PeerStatus, limit int) (listed []PeerStatus, omitted *PeerCounts, reachable []string) {
	if len(ps) <= limit {
		return ps, nil, nil
	}
	rank := func(p PeerStatus) int {
		switch {
		case p.Reachable == nil:
			return 1
		case *p.Reachable:
			return 2
		}
		return 0
	}
	slices.SortStableFunc(ps, func(x, y PeerStatus) int { return rank(x) - rank(y) })
	var c PeerCounts
	for _, p := range ps[limit:] {
		switch rank(p) {
		case 0:
			c.Unreachable++
		case 1:
			c.Unknown++
		default:
			c.Reachable++
			reachable = append(reachable, p.PublicIP)
		}
	}
	return ps[:limit:limit], &c, reachable
}

// publishStatus keeps this host's status entry in etcd on a lease of its
// own (TTL HOST_LIVENESS, kept alive), rewriting it when it changes.
//
// The peers are the bulk of the entry (about 100 bytes each: a megabyte at
// 10,000 peers), so they are listed again only when the prober's
// generation moved; round-trip times alone refresh them every
// statusRefresh. The rest is built and compared on every tick.
func (a *App) publishStatus(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var (
		lease    clientv3.LeaseID
		lost     atomic.Bool
		lastHead []byte // the entry without peers and time, as last written
		lastGen  uint64 // the peers' generation last written
		wrote    time.Time
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	defer func() {
		// A stopped daemon's view is gone at once, not when its lease expires.
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = a.etcd.Revoke(rctx, lease) // best effort: the lease expires anyway
			cancel()
		}
	}()
	key := a.keys().Status(a.cfg.HostName)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hs := a.hostStatus()
		head, err := json.Marshal(hs)
		if err != nil {
			continue
		}
		gen := a.peerGen()
		if lease != 0 && !lost.Load() && string(head) == string(lastHead) && gen == lastGen && time.Since(wrote) < statusRefresh {
			continue
		}
		// The time is set only when something changed: an unchanged entry
		// costs etcd nothing.
		hs.Updated = time.Now().UTC().Truncate(time.Second)
		hs.Peers, hs.PeersOmitted, hs.ReachableOmitted = a.statusPeers()
		out, err := json.Marshal(hs)
		if err != nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		if lease == 0 || lost.Load() {
			g, err := a.etcd.Grant(wctx, int64(a.cfg.HostLivenessTTL/time.Second))
			if err != nil {
				cancel()
				continue
			}
			ch, err := a.etcd.KeepAlive(ctx, g.ID)
			if err != nil {
				cancel()
				continue
			}
			lease = g.ID
			lost.Store(false)
			wg.Go(func() {
				for range ch { //nolint:revive // drain: the client needs its answers read
				}
				lost.Store(true)
			})
		}
		if _, err := a.etcd.Put(wctx, key, string(out), clientv3.WithLease(lease)); err == nil {
			lastHead, lastGen, wrote = head, gen, time.Now()
		}
		cancel()
	}
}

// DecodeHostStatus parses a status entry.
func DecodeHostStatus(b []byte) (HostStatus, error) {
	var hs HostStatus
	if err := json.Unmarshal(b, &hs); err != nil {
		return HostStatus{}, fmt.Errorf("decode status entry: %w", err)
	}
	return hs, nil
}
