package registry

// This file: asking etcd about our leases as soon as the client reconnects,
// so that an etcd that came back without them (wiped, restored from a copy,
// a new cluster at the same address) is noticed on its first answer, not at
// the next keep-alive (a third of the TTL later).

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// watchReconnects checks the leases each time the client's connection is
// ready again after it was not, until ctx ends.
func (r *Registry) watchReconnects(ctx context.Context) {
	OnReconnect(ctx, r.cfg.Client, func() { r.CheckLeases(ctx) })
}

// OnReconnect calls fn, on its own goroutine, each time cli's connection is
// ready again after it was not, until ctx ends: the moment to ask an etcd
// that may have come back without its data, before other clients write to
// it again.
func OnReconnect(ctx context.Context, cli *clientv3.Client, fn func()) {
	conn := cli.ActiveConnection()
	if conn == nil {
		return
	}
	s := conn.GetState()
	down := s != connectivity.Ready
	for conn.WaitForStateChange(ctx, s) {
		s = conn.GetState()
		switch s {
		case connectivity.Ready:
			if down {
				down = false
				fn()
			}
		case connectivity.TransientFailure, connectivity.Connecting, connectivity.Idle:
			down = true
		}
	}
}

// CheckLeases asks etcd for the remaining TTL of each current lease and
// drops (OnLeaseLost) those etcd does not know. A lease whose check fails
// otherwise (etcd unreachable again) is kept: its keep-alive decides.
func (r *Registry) CheckLeases(ctx context.Context) {
	var wg sync.WaitGroup
	for _, kind := range []leaseKind{regLease, hostLease} {
		id := r.current(kind)
		if id == 0 {
			continue
		}
		wg.Go(func() {
			if r.leaseGone(ctx, id) {
				r.dropLease(kind, id)
			}
		})
	}
	wg.Wait()
}

func (r *Registry) leaseGone(ctx context.Context, id clientv3.LeaseID) bool {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	resp, err := r.cfg.Client.TimeToLive(cctx, id)
	if err != nil {
		return isLeaseGone(err)
	}
	return resp.TTL <= 0
}
