package etcd

// This file: noticing that etcd is not the one we watched (wiped, restored,
// or another cluster at the same address).

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// headerCheck is the result of one header read.
type headerCheck struct {
	hdr     *etcdserverpb.ResponseHeader
	applied int64 // highest revision applied when the read was sent
	err     error
}

// checkHeader reads one key linearizably (count only) and sends etcd's
// header to out. applied is the highest revision applied before the read:
// a healthy etcd answers with a revision at least as high.
func (w *Watcher) checkHeader(ctx context.Context, applied int64, out chan<- headerCheck) {
	cctx, cancel := context.WithTimeout(ctx, max(2*w.o.HeaderCheckInterval, time.Second))
	defer cancel()
	// One key inside a watched prefix (the prefix itself): a user allowed to
	// watch it may read it, and the read costs one index lookup.
	resp, err := w.o.Client.Get(cctx, w.o.Keys.Subnets(), clientv3.WithCountOnly())
	c := headerCheck{applied: applied, err: err}
	if err == nil {
		c.hdr = resp.Header
		w.answered.Store(time.Now().UnixNano())
	}
	out <- c // buffered; one check in flight at a time
}

// historyLost says why etcd's history is not the one the store reflects, ""
// when it is: hdr (from a response sent after revision applied was applied)
// shows a lower revision, a lower raft term than seen before, or another
// cluster ID. It records the highest term seen.
func (w *Watcher) historyLost(hdr *etcdserverpb.ResponseHeader, applied int64) string {
	if hdr == nil {
		return ""
	}
	switch {
	case hdr.ClusterId != 0 && w.cluster != 0 && hdr.ClusterId != w.cluster:
		return fmt.Sprintf("etcd cluster ID changed (%x to %x)", w.cluster, hdr.ClusterId)
	case hdr.Revision != 0 && hdr.Revision < applied:
		return fmt.Sprintf("etcd revision went back (%d, below %d already applied): etcd lost its data or was restored", hdr.Revision, applied)
	case hdr.RaftTerm != 0 && hdr.RaftTerm < w.term:
		return fmt.Sprintf("etcd raft term went back (%d, below %d seen): etcd lost its data or was restored", hdr.RaftTerm, w.term)
	}
	w.term = max(w.term, hdr.RaftTerm)
	return ""
}

// HistoryLoss is an answer of etcd showing that its history is not the one
// the store reflects (Options.OnHistoryLost).
type HistoryLoss struct {
	Reason   string // as the re-list's OnRelist reason, e.g. "etcd revision went back ..."
	Applied  int64  // highest revision the store had applied
	Revision int64  // etcd's revision in that answer
}

// reportLoss calls OnHistoryLost once for the loss the next re-list repairs.
func (w *Watcher) reportLoss(why string, applied int64, hdr *etcdserverpb.ResponseHeader) {
	w.lossSeen = true
	if w.o.OnHistoryLost != nil {
		w.o.OnHistoryLost(HistoryLoss{Reason: why, Applied: applied, Revision: hdr.GetRevision()})
	}
}

// otherCluster says whether hdr comes from another cluster than the last list.
func (w *Watcher) otherCluster(hdr *etcdserverpb.ResponseHeader) bool {
	return hdr.ClusterId != 0 && w.cluster != 0 && hdr.ClusterId != w.cluster
}
