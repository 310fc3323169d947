package etcd

// This file: the watch of both prefixes (and flannel's config) on one
// stream, and what its answers say about etcd.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// watch watches both prefixes (and flannel's config) from where the store is
// until the watch ends. It returns the reason, whether to re-list at once
// (compaction, etcd lost its history) rather than after a backoff, and
// whether the watch delivered anything.
func (w *Watcher) watch(ctx context.Context) (reason string, retryNow, progressed bool) {
	// RequireLeader: a member that lost its cluster cancels the watch instead
	// of leaving it silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var chs [3]clientv3.WatchChan // nil (never ready) for a key not watched
	for i, key := range w.watchKeys() {
		if key == "" {
			continue
		}
		opts := []clientv3.OpOption{clientv3.WithRev(w.revs[i]), clientv3.WithProgressNotify()}
		if i != configWatch {
			opts = append(opts, clientv3.WithPrefix())
		}
		// From the revision applied, not the next one: etcd (3.6) answers no
		// progress request of a watch that starts beyond its revision, so in
		// a cluster where nothing was written since the list the stream
		// would stay silent. Events up to that revision are skipped (apply).
		chs[i] = w.o.Client.Watch(wctx, key, opts...)
	}
	var (
		tick     <-chan time.Time
		checks   = make(chan headerCheck, 2) // room for every read in flight: none blocks after watch returns
		inFlight int
		live     = newStreamLiveness(w.o.HeaderCheckInterval)
	)
	// check reads etcd's header unless a read is in flight; again is one
	// more read beside it (one sent while etcd was down may answer late).
	check := func(again bool) {
		if inFlight == 0 || (again && inFlight < cap(checks)) {
			inFlight++
			go w.checkHeader(wctx, w.applied(), checks)
		}
	}
	// The first answer of an etcd that came back is the one to check:
	// wiped or restored, its revision is below ours until other clients,
	// re-registering, write past it, and a watch resumed beyond its
	// revision answers no progress request. So the header is read as soon
	// as the client's connection is ready again, as the registry checks
	// its leases then.
	reconnected := make(chan struct{}, 1)
	var conns sync.WaitGroup
	conns.Go(func() {
		registry.OnReconnect(wctx, w.o.Client, func() {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		})
	})
	defer func() {
		cancel()
		conns.Wait()
	}()
	if w.o.HeaderCheckInterval > 0 {
		t := time.NewTicker(w.o.HeaderCheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var (
			wr clientv3.WatchResponse
			ok bool
			i  int
		)
		select {
		case <-ctx.Done():
			return "stopped", false, progressed
		case <-tick:
			now := time.Now()
			if live.needsCheck(now) {
				check(false) // the stream does not show etcd's header: read it
			}
			if why := live.silent(now); why != "" {
				return why, true, progressed // etcd answers elsewhere: re-list at once
			}
			w.requestProgress(wctx)
			continue
		case <-reconnected:
			check(true)
			continue
		case c := <-checks:
			inFlight--
			if c.err == nil {
				if why := w.historyLost(c.hdr, c.applied); why != "" {
					w.reportLoss(why, c.applied, c.hdr)
					return why, true, progressed
				}
				live.answeredElsewhere(time.Now())
			}
			continue
		case wr, ok = <-chs[0]:
		case wr, ok = <-chs[1]:
			i = 1
		case wr, ok = <-chs[configWatch]:
			i = configWatch
		}
		if !ok {
			return "watch closed", false, progressed
		}
		now := time.Now()
		live.heard(now, wr.IsProgressNotify())
		if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			w.compacted.Add(1)
			return "compacted", true, progressed
		}
		if err := wr.Err(); err != nil || wr.Canceled {
			return fmt.Sprintf("watch ended: %v", err), false, progressed
		}
		if wr.IsProgressNotify() {
			// The member's own revision and term, not a linearizable
			// answer: a member that lags (it caught up with the cluster
			// since) may show lower ones. Another cluster ID is final; a
			// lower revision or term is confirmed by the header read.
			if why := w.historyLost(&wr.Header, w.applied()); why != "" {
				if w.otherCluster(&wr.Header) {
					w.reportLoss(why, w.applied(), &wr.Header)
					return why, true, progressed
				}
				check(false)
				continue
			}
		} else if why := w.historyLost(&wr.Header, w.revs[i]); why != "" {
			w.reportLoss(why, w.revs[i], &wr.Header)
			return why, true, progressed
		}
		w.answered.Store(now.UnixNano())
		progressed = true
		if why := w.apply(ctx, i, wr); why != "" {
			return why, true, progressed
		}
	}
}

// watchKeys are the keys of the watches, by index of revs: both prefixes
// and, when followed, flannel's config key ("" when not).
func (w *Watcher) watchKeys() [3]string {
	keys := [3]string{w.o.Keys.Records(), w.o.Keys.Subnets(), ""}
	if w.o.OnFlannelConfig != nil {
		keys[configWatch] = w.o.Keys.FlannelConfig()
	}
	return keys
}

// configWatch is the index of flannel's config key in revs and watchKeys.
const configWatch = 2

// applied is the highest revision applied by any watch.
func (w *Watcher) applied() int64 { return max(w.revs[0], w.revs[1], w.revs[configWatch]) }

// lowest is the revision the store reflects: the lowest of the watches.
func (w *Watcher) lowest() int64 {
	low := min(w.revs[0], w.revs[1])
	if w.o.OnFlannelConfig != nil {
		low = min(low, w.revs[configWatch])
	}
	return low
}
