package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// txnAttempts bounds the read-decide-write rounds of one operation when a
// guard fails because someone wrote in between.
const txnAttempts = 5

// DefaultRequestTimeout bounds one etcd operation, so that a reconcile fails
// (and is retried by the runner) instead of hanging while etcd is down.
const DefaultRequestTimeout = 10 * time.Second

// Config configures a Registry.
type Config struct {
	Client          *clientv3.Client
	Keys            Keys
	Host            string        // this host's name
	RegistrationTTL time.Duration // lease of network records and reservations
	HostLivenessTTL time.Duration // lease of the host record
	RequestTimeout  time.Duration // per operation; 0: DefaultRequestTimeout
	// OnLeaseLost is called (from Run or from the failing operation's
	// goroutine, never with a lock held) when a lease expired or its
	// keep-alive ended: the records attached to it may be gone, so the caller
	// re-enqueues the keys that write them (every network for the
	// registration lease, the host record for the liveness lease). which is
	// "registration lease" or "host liveness lease". It must not block.
	OnLeaseLost func(which string)
}

// Registry writes this host's network records, reservations and host record.
// Leases are granted on demand and kept alive by Run. Safe for concurrent use.
type Registry struct {
	cfg  Config
	kick chan struct{} // a lease was granted: Run starts keeping it alive

	mu     sync.Mutex // guards leases
	leases [2]clientv3.LeaseID

	// newLessor makes the lessor Run keeps leases alive with (tests inject
	// faults here).
	newLessor func(*clientv3.Client) clientv3.Lease
}

// leaseKind indexes Registry.leases.
type leaseKind int

const (
	regLease  leaseKind = iota // network records and reservations
	hostLease                  // host record
)

func (k leaseKind) String() string {
	if k == hostLease {
		return "host liveness lease"
	}
	return "registration lease"
}

// New returns a registry for cfg.Host.
func New(cfg Config) (*Registry, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("registry: no etcd client")
	case cfg.Host == "" || cfg.Host[0] == '_' || strings.Contains(cfg.Host, "/"):
		return nil, fmt.Errorf("registry: host name %q is empty, starts with '_' or contains '/'", cfg.Host)
	case cfg.RegistrationTTL < time.Second || cfg.HostLivenessTTL < time.Second:
		return nil, fmt.Errorf("registry: lease TTLs %s and %s must be at least 1s", cfg.RegistrationTTL, cfg.HostLivenessTTL)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	return &Registry{cfg: cfg, kick: make(chan struct{}, 1), newLessor: clientv3.NewLease}, nil
}

// Host returns this host's name.
func (r *Registry) Host() string { return r.cfg.Host }

// Keys returns the key layout.
func (r *Registry) Keys() Keys { return r.cfg.Keys }

// Lease returns the current registration lease, 0 when none is granted.
func (r *Registry) Lease() clientv3.LeaseID { return r.current(regLease) }

// HostLease is the current host liveness lease (0 before the first grant).
func (r *Registry) HostLease() clientv3.LeaseID { return r.current(hostLease) }

// errRetry: a guard failed because someone wrote in between; read again.
var errRetry = errors.New("etcd changed during the transaction")

// commit runs a guarded transaction. A failed guard is errRetry; a lease that
// expired is dropped (OnLeaseLost) and also errRetry, so the next round
// writes on a new lease.
func (r *Registry) commit(ctx context.Context, kind leaseKind, id clientv3.LeaseID, guards []clientv3.Cmp, ops []clientv3.Op) error {
	resp, err := r.cfg.Client.Txn(ctx).If(guards...).Then(ops...).Commit()
	switch {
	case err != nil && isLeaseGone(err):
		r.dropLease(kind, id)
		return fmt.Errorf("%s %x expired: %w", kind, id, errRetry)
	case err != nil && errors.Is(err, rpctypes.ErrPermissionDenied):
		// The operator's fix is in etcd's roles: say which.
		return fmt.Errorf("etcd transaction: %w (the etcd user needs readwrite on the prefixes %s and %s)",
			err, r.cfg.Keys.Records(), r.cfg.Keys.Subnets())
	case err != nil:
		return fmt.Errorf("etcd transaction: %w", err)
	case !resp.Succeeded:
		return errRetry
	}
	return nil
}

// guard compares key with what was read: absent, or unchanged since.
func guard(key string, kv *mvccpb.KeyValue) clientv3.Cmp {
	if kv == nil {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
}

func first(kvs []*mvccpb.KeyValue) *mvccpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}
