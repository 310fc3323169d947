package etcd

// This file: noticing that the member serving our watch stopped answering
// (partitioned, frozen), sooner than gRPC's keep-alive would.

import (
	"context"
	"fmt"
	"time"
)

// Every HeaderCheckInterval the watcher asks for a progress notification
// on its watch stream. That request is data on the stream's own
// connection: when the member is gone from the network the kernel gives
// up on it after the client's TCP user timeout (the etcd client's
// DialKeepAliveTimeout), the stream fails and the client resumes the
// watch on another member. An idle watch stream otherwise notices only at
// gRPC's next keep-alive ping, which is at least 10 s away. A member that
// is frozen (its kernel still acknowledges) answers nothing: when a stream
// that answered progress requests before stays silent for silentAfter
// while the header check (another request, on any member) is answered,
// the watch is ended and started again. When etcd as a whole is down the
// header check fails too, and the watch stays: the client resumes it when
// etcd is back, and the header check sees at once whether it came back
// with its history.

// streamLiveness tracks what one watch stream said when.
type streamLiveness struct {
	silentAfter time.Duration
	last        time.Time // anything received on the stream (or the watch start)
	progressed  bool      // the member answered a progress request: it supports them
	elsewhere   time.Time // the last header check etcd answered
}

func newStreamLiveness(interval time.Duration) *streamLiveness {
	return &streamLiveness{silentAfter: max(3*interval, 3*time.Second), last: time.Now()}
}

func (s *streamLiveness) heard(now time.Time, progressNotify bool) {
	s.last = now
	s.progressed = s.progressed || progressNotify
}

// answeredElsewhere records a header check etcd answered.
func (s *streamLiveness) answeredElsewhere(now time.Time) { s.elsewhere = now }

// silent says why the stream is considered dead, "" while it is not: silent
// for silentAfter while etcd answered a header check sent during the
// silence. A server that never answered a progress request (older than
// etcd 3.4) is never judged by its silence.
func (s *streamLiveness) silent(now time.Time) string {
	if !s.progressed || now.Sub(s.last) < s.silentAfter || s.elsewhere.Sub(s.last) < s.silentAfter/3 {
		return ""
	}
	return fmt.Sprintf("watch stream silent for %s: etcd member not answering", now.Sub(s.last).Round(time.Millisecond))
}

// requestProgress asks for a progress notification on the watch stream of
// wctx (the same context, so the same stream). Bounded: it must not hold
// up the watch loop when the stream's sender is stuck.
func (w *Watcher) requestProgress(wctx context.Context) {
	ctx, cancel := context.WithTimeout(wctx, time.Second)
	defer cancel()
	_ = w.o.Client.RequestProgress(ctx) // best effort: silence is what counts
}
