package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lease returns the current lease of kind, granting one when there is none.
func (r *Registry) lease(ctx context.Context, kind leaseKind) (clientv3.LeaseID, error) {
	r.mu.Lock()
	id := r.leases[kind]
	r.mu.Unlock()
	if id != 0 {
		return id, nil
	}
	ttl := r.cfg.RegistrationTTL
	if kind == hostLease {
		ttl = r.cfg.HostLivenessTTL
	}
	resp, err := r.cfg.Client.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant %s (TTL %s): %w", kind, ttl, err)
	}
	r.mu.Lock()
	if cur := r.leases[kind]; cur != 0 {
		// Another operation granted one concurrently; use it and let ours
		// expire unused.
		r.mu.Unlock()
		return cur, nil
	}
	r.leases[kind] = resp.ID
	r.mu.Unlock()
	r.poke()
	return resp.ID, nil
}

// dropLease forgets id (if it is still current) and calls OnLeaseLost.
func (r *Registry) dropLease(kind leaseKind, id clientv3.LeaseID) {
	r.mu.Lock()
	dropped := r.leases[kind] == id && id != 0
	if dropped {
		r.leases[kind] = 0
	}
	r.mu.Unlock()
	if dropped && r.cfg.OnLeaseLost != nil {
		r.cfg.OnLeaseLost(kind.String())
	}
}

// poke wakes Run to compare the leases it keeps alive with the current ones.
func (r *Registry) poke() {
	select {
	case r.kick <- struct{}{}:
	default: // Run has a kick pending already
	}
}

// keeper keeps one lease alive.
type keeper struct {
	id     clientv3.LeaseID
	ch     <-chan *clientv3.LeaseKeepAliveResponse
	cancel context.CancelFunc
}

func (k *keeper) stop() {
	if k.cancel != nil {
		k.cancel()
	}
	*k = keeper{}
}

// Backoff of keep-alive restarts: a keep-alive that cannot be started is
// retried until ctx ends, never given up, or every record would expire.
const (
	keepAliveRetryMin = 250 * time.Millisecond
	keepAliveRetryMax = 30 * time.Second
)

// Run keeps the leases alive until ctx ends. When a keep-alive ends (the lease
// expired, or etcd was unreachable for longer than its TTL), the lease is
// dropped, OnLeaseLost is called and the next write grants a new one. When a
// keep-alive cannot be started (the client's keep-alive loop halted), Run
// retries with backoff on a fresh lessor. Each time the client reconnects,
// Run asks etcd about the leases (CheckLeases): one etcd lost is dropped at
// once. Leases are not revoked when Run returns: a restarted registrar
// re-attaches the records to its new lease before the old one expires. Run
// returns nil when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait (deferred later, runs first)
	wg.Go(func() { r.watchReconnects(rctx) })
	lessor := r.newLessor(r.cfg.Client)
	var ks [2]keeper
	defer func() {
		ks[regLease].stop()
		ks[hostLease].stop()
		_ = lessor.Close() // only our keep-alives; the client stays open
	}()
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(keepAliveRetryMin),
		backoff.WithMaxInterval(keepAliveRetryMax), backoff.WithMaxElapsedTime(0))
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var retryC <-chan time.Time
	for {
		failed := false
		r.mu.Lock()
		want := r.leases
		r.mu.Unlock()
		for kind := range ks {
			if ks[kind].id == want[kind] {
				continue
			}
			ks[kind].stop()
			if want[kind] == 0 {
				continue
			}
			if err := r.keepAlive(ctx, lessor, &ks[kind], want[kind]); err != nil {
				failed = true
				if errors.As(err, new(clientv3.ErrKeepAliveHalted)) {
					// A halted lessor never recovers: start over with a new one.
					_ = lessor.Close()
					lessor = r.newLessor(r.cfg.Client)
				}
			}
		}
		switch {
		case failed && retryC == nil:
			retry.Reset(bo.NextBackOff())
			retryC = retry.C
		case !failed:
			bo.Reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-retryC:
			retryC = nil
		case _, ok := <-ks[regLease].ch:
			r.keepAliveEnded(&ks[regLease], regLease, ok)
		case _, ok := <-ks[hostLease].ch:
			r.keepAliveEnded(&ks[hostLease], hostLease, ok)
		}
	}
}

func (r *Registry) keepAlive(ctx context.Context, lessor clientv3.Lease, k *keeper, id clientv3.LeaseID) error {
	kctx, cancel := context.WithCancel(ctx)
	ch, err := lessor.KeepAlive(kctx, id)
	if err != nil {
		cancel()
		return fmt.Errorf("keep lease %x alive: %w", id, err)
	}
	*k = keeper{id: id, ch: ch, cancel: cancel}
	return nil
}

// keepAliveEnded handles one receive from a keep-alive channel: a response
// (ok) needs nothing; a closed channel means the lease is gone.
func (r *Registry) keepAliveEnded(k *keeper, kind leaseKind, ok bool) {
	if ok {
		return
	}
	id := k.id
	k.stop()
	r.dropLease(kind, id)
}

// isLeaseGone says whether err means the lease used in a write has expired.
func isLeaseGone(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound)
}

// current returns the lease of kind, 0 when none is granted.
func (r *Registry) current(kind leaseKind) clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases[kind]
}
