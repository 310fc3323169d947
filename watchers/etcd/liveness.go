package etcd

// This file: noticing that the member serving our watch stopped answering
// (partitioned, frozen), sooner than gRPC's keep-alive would.

import (
	"context"
	"fmt"
	"time"
)

// Every HeaderCheckInterval the watcher asks for a progress notification
// on its watch stream: the stream's keep-alive, and in steady state the only
// request the watcher sends. The answer carries etcd's header (revision,
// raft term, cluster ID), which the watcher checks as it checks the header
// read's (history.go), and counts as etcd's answer (LastAnswered). The
// request is data on the stream's own connection: when the member is gone from the network the kernel gives
// up on it after the client's TCP user timeout (the etcd client's
// DialKeepAliveTimeout), the stream fails and the client resumes the
// watch on another member. An idle watch stream otherwise notices only at
// gRPC's next keep-alive ping, which is at least 10 s away. A member that
// is frozen (its kernel still acknowledges) answers nothing: the header
// read (another request, on any member) runs while the stream is silent
// for more than checkAfter, and when a stream that answered progress
// requests before stays silent for silentAfter while that read is
// answered, the watch is ended and started again. When etcd as a whole is down the
// header check fails too, and the watch stays: the client resumes it when
// etcd is back, and the header check sees at once whether it came back
// with its history.

// streamLiveness tracks what one watch stream said when.
type streamLiveness struct {
	checkAfter  time.Duration // silence after which etcd's header is read instead
	silentAfter time.Duration
	last        time.Time // anything received on the stream (or the watch start)
	progressed  bool      // the member answered a progress request: it supports them
	elsewhere   time.Time // the last header check etcd answered
}

func newStreamLiveness(interval time.Duration) *streamLiveness {
	// checkAfter: one and a half intervals, so that an answer to the last
	// request that came quickly and a tick that came late are no silence.
	return &streamLiveness{checkAfter: interval * 3 / 2, silentAfter: max(3*interval, 3*time.Second), last: time.Now()}
}

// needsCheck says whether etcd's header must be read now: the stream never
// answered a progress request (an etcd older than 3.4 answers none; at the
// watch's start none came yet), or it has been silent for more than
// checkAfter (etcd down, the member frozen or partitioned, or a watch that
// etcd accepted beyond its revision: it lost its data).
func (s *streamLiveness) needsCheck(now time.Time) bool {
	return !s.progressed || now.Sub(s.last) > s.checkAfter
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
// wctx (the same context, so the same stream): the stream's keep-alive.
// Bounded: it must not hold up the watch loop when the stream's sender is
// stuck.
func (w *Watcher) requestProgress(wctx context.Context) {
	ctx, cancel := context.WithTimeout(wctx, time.Second)
	defer cancel()
	_ = w.o.Client.RequestProgress(ctx) // best effort: silence is what counts
}
