package app

// This file: the original tool's leftovers (found, summarised, quarantined).

import (
	"context"

	"github.com/flannel-registrar/flannel-registrar/pkg/legacy"
)

// onInvalidEtcd is the etcd watcher's OnInvalid hook. It must not block the
// watcher: the key is classified by the health loop (one read each).
func (a *App) onInvalidEtcd(key string, rev int64, err error) {
	a.h.mu.Lock()
	a.h.pending[key] = rev
	a.h.mu.Unlock()
	select {
	case a.h.kick <- struct{}{}:
	default:
	}
	a.log.Debug("invalid etcd item", "key", key, "revision", rev, "error", err.Error())
}

// prescan runs the leftover scan once the sources are listed and before the
// controllers start: the subnets controller would otherwise unregister this
// host's plain-CIDR entries (keys of its own name that are not local
// networks) before they are copied to _quarantine.
func (a *App) prescan(ctx context.Context) {
	a.h.scanned.Store(a.scanLeftovers(ctx))
	a.h.prescanned.Store(true)
}

// scanLeftovers lists the original tool's keys once per start, logs one
// summary line, and moves aside those that are this host's to move.
func (a *App) scanLeftovers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	los, err := legacy.Scan(ctx, a.etcd, a.keys())
	if err != nil {
		a.log.Debug("cannot scan for the original tool's keys yet", "error", err.Error())
		return false
	}
	a.h.mu.Lock()
	for _, lo := range los {
		a.h.leftovers[lo.Key] = lo
		delete(a.h.pending, lo.Key)
	}
	a.h.mu.Unlock()
	if len(los) > 0 {
		sum := legacy.Summary(los)
		a.log.Warn("found keys the original flannel-registrar (bash) left; this host's are moved to _quarantine, others are left to their hosts (see `flannel-registrar doctor`)",
			"network_text", sum[legacy.NetworkText], "host_status", sum[legacy.HostStatus],
			"exists_marker", sum[legacy.Exists], "loopback_leases", sum[legacy.LoopbackVXLAN])
	}
	for _, lo := range los {
		a.moveLeftover(ctx, lo)
	}
	return true
}

// classifyPending reads each invalid key reported since the last tick: the
// original's leftovers are tracked (and, with move, moved when ours to
// move), anything else is reported as an invalid item.
func (a *App) classifyPending(ctx context.Context, move bool) {
	a.h.mu.Lock()
	pending := a.h.pending
	a.h.pending = map[string]int64{}
	a.h.mu.Unlock()
	for key, rev := range pending {
		rctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		resp, err := a.etcd.Get(rctx, key)
		cancel()
		if err != nil || len(resp.Kvs) == 0 {
			continue // gone, or etcd down: a re-list reports it again
		}
		kv := resp.Kvs[0]
		lo, ok := legacy.Classify(a.keys(), key, kv.Value)
		if !ok {
			a.log.Warn("skipped invalid etcd item", "key", key, "revision", rev, "value", truncate(string(kv.Value), 200))
			continue
		}
		a.h.mu.Lock()
		_, known := a.h.leftovers[key]
		a.h.leftovers[key] = lo
		a.h.mu.Unlock()
		if !known {
			a.log.Info("key left by the original flannel-registrar", "key", key, "kind", string(lo.Kind), "host", lo.Host)
		}
		if move {
			a.moveLeftover(ctx, lo)
		}
	}
}

func (a *App) moveLeftover(ctx context.Context, lo legacy.Leftover) {
	if !lo.Movable(a.cfg.HostName) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	resp, err := a.etcd.Get(ctx, lo.Key)
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	kv := resp.Kvs[0]
	moved, err := legacy.Quarantine(ctx, a.etcd, a.keys(), lo.Key, kv.ModRevision, string(kv.Value))
	switch {
	case err != nil:
		a.log.Warn("cannot quarantine a leftover key; retrying at the next re-list", "key", lo.Key, "error", err.Error())
	case moved:
		a.h.quarantined.Add(1)
		a.h.mu.Lock()
		delete(a.h.leftovers, lo.Key)
		a.h.mu.Unlock()
		a.log.Warn("quarantined and removed a key the original tool left", "key", lo.Key, "kind", string(lo.Kind),
			"to", a.keys().QuarantineKey(lo.Key), "value", truncate(string(kv.Value), 200))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
