package app

// This file: etcd lost our data (wiped, restored from a copy, another
// cluster at the same address). The etcd watcher reports it on the first
// answer that shows it; the wiring re-registers at once and keeps every
// host's kernel state while the other owners do the same.

import (
	"context"
	"fmt"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// historyLossHold is how long, after etcd lost its data, the routes and fdb
// controllers keep what vanished from the snapshot: every registrar notices
// within about a second of etcd answering (the watcher's header check) and
// writes its records again within a second after that. After it, the
// snapshot wins: what nobody wrote again is removed.
const historyLossHold = 5 * time.Second

// onHistoryLost is the etcd watcher's OnHistoryLost. It runs on the
// watcher's goroutine before the re-list replaces the snapshot, so the hold
// is in place before any controller sees the records vanish. It must not
// block: the re-registration runs on runDeferred's goroutine.
func (a *App) onHistoryLost(l etcdwatch.HistoryLoss) {
	a.hold.Start(historyLossHold)
	what := l.Reason
	if l.Revision < l.Applied {
		what = fmt.Sprintf("revision went back %d → %d", l.Applied, l.Revision)
	}
	a.log.Warn(fmt.Sprintf("etcd lost our data (%s): re-registering %d networks", what, len(a.store.LocalNetworks())),
		"reason", l.Reason, "applied_revision", l.Applied, "etcd_revision", l.Revision, "routes_held_for", historyLossHold.String())
	select {
	case a.reregister <- struct{}{}:
	default: // one is queued already and covers this one
	}
}

// reregisterAll asks etcd about our leases — those it lost are dropped
// (and new ones granted by the writes); one it still holds (a copy taken
// while this process ran, or one granted since etcd came back) is kept, so
// nothing is moved for nothing — then writes every record, reservation and
// host record again through the subnets controller's normal path.
func (a *App) reregisterAll(ctx context.Context) {
	a.reg.CheckLeases(ctx)
	a.resyncOne(subnets.Name, "etcd:history-lost")
}
