package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// counters are the write and reconcile counts the app reports.
type counters struct {
	Netlink    netlinkx.WriteStats
	IPTables   uint64
	Reconciles uint64
	Errors     uint64
}

func (a *App) counters() counters {
	c := counters{Netlink: a.nl.WriteStats(), IPTables: a.fwd.Writes()}
	for _, s := range a.mgr.Stats() {
		c.Reconciles += s.Reconciles
		c.Errors += s.Errors
	}
	return c
}

// reportCounters logs, once per INTERVAL (the resync period), the kernel
// writes made since the last report. A converged host writes nothing on
// resync, so an Info line here means something drifted or changed; quiet
// periods are logged at debug level only.
func (a *App) reportCounters(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	last := a.counters()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := a.counters()
		nl := now.Netlink.Total() - last.Netlink.Total()
		ipt := now.IPTables - last.IPTables
		level := slog.LevelDebug
		if nl+ipt > 0 {
			level = slog.LevelInfo
		}
		a.log.Log(ctx, level, "writes since last report",
			"netlink", nl,
			"route_replace", now.Netlink.RouteReplace-last.Netlink.RouteReplace,
			"route_del", now.Netlink.RouteDel-last.Netlink.RouteDel,
			"neigh_set", now.Netlink.NeighSet-last.Netlink.NeighSet,
			"neigh_del", now.Netlink.NeighDel-last.Netlink.NeighDel,
			"fdb_set", now.Netlink.FDBSet-last.Netlink.FDBSet,
			"fdb_del", now.Netlink.FDBDel-last.Netlink.FDBDel,
			"iptables", ipt,
			"reconciles", now.Reconciles-last.Reconciles,
			"errors", now.Errors-last.Errors,
			"period", a.cfg.Interval)
		last = now
	}
}
