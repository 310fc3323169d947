package app

// This file: this daemon's status entry in etcd, read by `status`.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/recovery"
)

// HostStatus is this host's entry under <ConfigPrefix>/_status/: the view
// from here that `status` shows for every host.
type HostStatus struct {
	Host      string         `json:"Host"`
	Updated   time.Time      `json:"Updated"`
	Ready     bool           `json:"Ready"`
	Peers     []PeerStatus   `json:"Peers"`
	Recovery  RecoveryStatus `json:"Recovery"`
	Leftovers int            `json:"Leftovers"`
}

// PeerStatus is one peer's reachability from the host of a HostStatus.
type PeerStatus struct {
	Host      string  `json:"Host,omitempty"`
	PublicIP  string  `json:"PublicIP"`
	Reachable *bool   `json:"Reachable"` // nil: not decided yet
	RTTMillis float64 `json:"RTTMillis,omitempty"`
}

// RecoveryStatus is the recovery guard as seen by status.
type RecoveryStatus struct {
	Mode    string            `json:"Mode"`
	Actions map[string]uint64 `json:"Actions,omitempty"`
	recovery.Status
}

func (a *App) hostStatus() HostStatus {
	hs := HostStatus{Host: a.cfg.HostName, Ready: a.isSynced() && a.etcdAnswers() == nil && a.store.Link().Present}
	for _, p := range a.peerStates() {
		ps := PeerStatus{Host: p.Host, PublicIP: p.Key}
		if p.Probed {
			r := p.Reachable
			ps.Reachable = &r
			if r {
				ps.RTTMillis = float64(p.RTT.Microseconds()) / 1000
			}
		}
		hs.Peers = append(hs.Peers, ps)
	}
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

// significant is hs without what changes on every probe.
func significant(hs HostStatus) HostStatus {
	peers := make([]PeerStatus, len(hs.Peers))
	for i, p := range hs.Peers {
		p.RTTMillis = 0
		peers[i] = p
	}
	hs.Peers = peers
	return hs
}

// publishStatus keeps this host's status entry in etcd on a lease of its
// own (TTL HOST_LIVENESS, kept alive), rewriting it when it changes.
func (a *App) publishStatus(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var (
		lease clientv3.LeaseID
		lost  atomic.Bool
		last  []byte
		wrote time.Time
		wg    sync.WaitGroup
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
		val, err := json.Marshal(significant(hs))
		if err != nil {
			continue
		}
		// Round-trip times change with every probe: they alone refresh the
		// entry every statusRefresh, so a quiet cluster costs etcd almost nothing.
		if lease != 0 && !lost.Load() && string(val) == string(last) && time.Since(wrote) < statusRefresh {
			continue
		}
		// The time is set only when something changed: an unchanged entry
		// costs etcd nothing.
		hs.Updated = time.Now().UTC().Truncate(time.Second)
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
			last, wrote = val, time.Now()
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
