package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
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

// ---- leases ----

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
	select {
	case r.kick <- struct{}{}:
	default: // Run has a kick pending already
	}
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
// retries with backoff on a fresh lessor. Leases are not revoked when Run
// returns: a restarted registrar re-attaches the records to its new lease
// before the old one expires. Run returns nil when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
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

// ---- network records and reservations ----

// Change says what PutNetwork did.
type Change int

// Changes.
// They are ordered: one PutNetwork reports the highest that applies.
const (
	Unchanged  Change = iota // values equal and on the current lease: nothing written
	Reattached               // same values, moved to the current lease (e.g. after a restart)
	Updated                  // a value changed (see PutResult.Fields)
	Created                  // the record was written where there was none
)

func (c Change) String() string {
	return [...]string{"unchanged", "re-attached", "updated", "created"}[c]
}

// PutResult describes what PutNetwork did.
type PutResult struct {
	Change Change
	// Fields names what was rewritten for Updated: record fields whose value
	// changed (e.g. "VtepMAC"), "record", "reservation", or
	// "old reservation <cidr>" when the subnet moved.
	Fields []string
	// Quarantined lists legacy leases copied under _quarantine and replaced.
	Quarantined []Quarantined
}

// Quarantined is one value moved aside: the value of Key is now also at To.
type Quarantined struct{ Key, To, Value string }

// ConflictError says that another claimant holds the reservation of a subnet
// one of our networks wants. Nothing of the claimant's was changed.
type ConflictError struct {
	Subnet   netip.Prefix
	Network  string // our network
	Claimant string // who holds it, in words
	Key      string // the contested etcd key
	// Withdrawn is true when our own record or reservation of Network existed
	// and was deleted: the reservation decides who owns a subnet, and it is
	// not us. WithdrawnSubnet is the subnet the withdrawn record named (it
	// differs from Subnet when the network's subnet changed).
	Withdrawn       bool
	WithdrawnSubnet netip.Prefix
	// Duplicate is set when the claimant is another registrar using this
	// host's name (cloned VMs): then nothing was withdrawn.
	Duplicate DuplicateHost
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("subnet %s of network %s is claimed by %s (%s)", e.Subnet, e.Network, e.Claimant, e.Key)
	if e.Withdrawn {
		s += "; our record and reservation were withdrawn"
	}
	return s
}

// netState is what one read of a network's keys found.
type netState struct {
	rev     int64            // revision of the read
	rec     *mvccpb.KeyValue // our record, nil when absent
	res     *mvccpb.KeyValue // the reservation key of the wanted subnet, nil when absent
	oldRes  *mvccpb.KeyValue // our reservation at the record's old subnet, when it moved
	oldSub  netip.Prefix
	host    hostView
	subnets []subnetEntry
	hr      hostRead
}

// PutNetwork registers n (its Host must be empty or this host; n is one of
// this host's Docker networks and its PublicIP and VtepMAC are this host's
// identity): the record and the reservation of its subnet, on the
// registration lease, in one transaction. It returns a *ConflictError when
// the reservation key holds anything but our own reservation of n.Network,
// when another entry under <FLANNEL_PREFIX>/subnets overlaps n.Subnet, or
// when the record key belongs to another registrar using this host's name.
// On a conflict our own record and reservations of n are withdrawn, so that
// no peer routes a subnet we do not hold. A vxlan lease without TTL carrying
// our PublicIP at n.Subnet (left by the original tool) is copied under
// <ConfigPrefix>/_quarantine/ and replaced (PutResult.Quarantined).
func (r *Registry) PutNetwork(ctx context.Context, n Network) (PutResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	if n.Host == "" {
		n.Host = r.cfg.Host
	}
	if n.Host != r.cfg.Host {
		return PutResult{}, fmt.Errorf("put network %s: host %q is not this host %q", n.Network, n.Host, r.cfg.Host)
	}
	recVal, err := EncodeNetwork(n)
	if err != nil {
		return PutResult{}, fmt.Errorf("put network %s: %w", n.Network, err)
	}
	resVal, err := flannel.Encode(flannel.NewReservation(n.Host, n.Network))
	if err != nil {
		return PutResult{}, fmt.Errorf("put network %s: %w", n.Network, err)
	}
	var lastErr error
	for range txnAttempts {
		res, err := r.putNetworkOnce(ctx, n, recVal, resVal)
		if err == nil || !errors.Is(err, errRetry) {
			return res, err
		}
		lastErr = err
	}
	return PutResult{}, fmt.Errorf("put network %s %s: %w", n.Network, n.Subnet, lastErr)
}

// errRetry marks a round that lost a race; the caller reads again.
var errRetry = errors.New("etcd changed during the transaction")

func (r *Registry) putNetworkOnce(ctx context.Context, n Network, recVal, resVal []byte) (PutResult, error) {
	id, err := r.lease(ctx, regLease)
	if err != nil {
		return PutResult{}, err
	}
	ident := Identity{PublicIP: n.PublicIP, VtepMAC: n.VtepMAC}
	recKey, resKey := r.cfg.Keys.Network(n.Host, n.Network), r.cfg.Keys.Subnet(n.Subnet)
	st, err := r.readNetwork(ctx, n, id, ident)
	if err != nil {
		return PutResult{}, err
	}
	if dup, foreign := r.duplicateOf(st.rec, id, ident, st.host.live); foreign {
		return PutResult{}, &ConflictError{Subnet: n.Subnet, Network: n.Network, Claimant: dup.String(), Key: recKey, Duplicate: dup}
	}
	legacy := legacyLease(st.res, ident)
	if claimant, ok := r.claimant(st.res, n.Network, st.host); !ok && !legacy {
		return PutResult{}, r.conflict(ctx, n, st, &ConflictError{Subnet: n.Subnet, Network: n.Network, Claimant: claimant, Key: resKey})
	}
	if e, claimant, ok := r.overlapping(st.subnets, n.Subnet, ident, st.host); ok {
		return PutResult{}, r.conflict(ctx, n, st, &ConflictError{Subnet: n.Subnet, Network: n.Network,
			Claimant: claimant + " at overlapping " + e.prefix.String(), Key: string(e.kv.Key)})
	}
	if err := r.markLive(ctx, ident, st.hr); err != nil {
		return PutResult{}, err
	}
	var (
		ops []clientv3.Op
		res = PutResult{Change: Unchanged}
	)
	// The prefix guards make the overlap and duplicate checks hold at commit.
	guards := append([]clientv3.Cmp{
		guard(recKey, st.rec), guard(resKey, st.res),
		clientv3.Compare(clientv3.ModRevision(r.cfg.Keys.Subnets()), "<", st.rev+1).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(r.cfg.Keys.HostNetworks(r.cfg.Host)), "<", st.rev+1).WithPrefix(),
	}, r.hostGuards(st.rev)...)
	note := func(c Change, fields ...string) {
		res.Fields = append(res.Fields, fields...)
		res.Change = max(res.Change, c)
	}
	put := func(key string, val []byte) {
		ops = append(ops, clientv3.OpPut(key, string(val), clientv3.WithLease(id)))
	}
	switch {
	case st.rec == nil:
		put(recKey, recVal)
		note(Created)
	case string(st.rec.Value) != string(recVal):
		put(recKey, recVal)
		note(Updated, recordFields(st.rec.Value, n.Record())...)
	case clientv3.LeaseID(st.rec.Lease) != id:
		put(recKey, recVal)
		note(Reattached)
	}
	switch {
	case legacy:
		qKey := r.cfg.Keys.QuarantineKey(resKey)
		ops = append(ops, clientv3.OpPut(qKey, string(st.res.Value)))
		put(resKey, resVal)
		res.Quarantined = append(res.Quarantined, Quarantined{Key: resKey, To: qKey, Value: string(st.res.Value)})
		note(Updated, "reservation")
	case st.res == nil || string(st.res.Value) != string(resVal):
		put(resKey, resVal)
		note(Updated, "reservation")
	case clientv3.LeaseID(st.res.Lease) != id:
		put(resKey, resVal)
		note(Reattached)
	}
	if st.oldRes != nil {
		oldKey := r.cfg.Keys.Subnet(st.oldSub)
		guards = append(guards, guard(oldKey, st.oldRes))
		ops = append(ops, clientv3.OpDelete(oldKey))
		note(Updated, "old reservation "+st.oldSub.String())
	}
	if len(ops) == 0 {
		return res, nil
	}
	if err := r.commit(ctx, regLease, id, guards, ops); err != nil {
		return PutResult{}, err
	}
	if res.Change == Created {
		res.Fields = nil
	}
	return res, nil
}

// commit runs a guarded transaction. A failed guard is errRetry; a lease that
// expired is dropped (OnLeaseLost) and also errRetry, so the next round
// writes on a new lease.
func (r *Registry) commit(ctx context.Context, kind leaseKind, id clientv3.LeaseID, guards []clientv3.Cmp, ops []clientv3.Op) error {
	resp, err := r.cfg.Client.Txn(ctx).If(guards...).Then(ops...).Commit()
	switch {
	case err != nil && isLeaseGone(err):
		r.dropLease(kind, id)
		return fmt.Errorf("%s %x expired: %w", kind, id, errRetry)
	case err != nil:
		return fmt.Errorf("etcd transaction: %w", err)
	case !resp.Succeeded:
		return errRetry
	}
	return nil
}

// readNetwork reads, at one revision, this host name's records and every
// entry under <FLANNEL_PREFIX>/subnets (per registration, not per resync),
// and picks out the record of n, the reservation of its subnet and our
// reservation at the record's old subnet when it moved.
func (r *Registry) readNetwork(ctx context.Context, n Network, cur clientv3.LeaseID, id Identity) (netState, error) {
	resp, err := r.cfg.Client.Txn(ctx).Then(append([]clientv3.Op{
		clientv3.OpGet(r.cfg.Keys.HostNetworks(r.cfg.Host), clientv3.WithPrefix()),
		clientv3.OpGet(r.cfg.Keys.Subnets(), clientv3.WithPrefix()),
	}, r.hostOps()...)...).Commit()
	if err != nil {
		return netState{}, fmt.Errorf("read network %s: %w", n.Network, err)
	}
	hr := readHost(resp.Responses[2].GetResponseRange(), resp.Responses[3].GetResponseRange())
	st := netState{
		rev:     resp.Header.Revision,
		host:    r.viewHost(resp.Responses[0].GetResponseRange().Kvs, cur, id, r.live(hr, r.current(hostLease))),
		subnets: r.subnetEntries(resp.Responses[1].GetResponseRange().Kvs),
		hr:      hr,
	}
	st.rec = st.host.records[r.cfg.Keys.Network(n.Host, n.Network)]
	st.res = st.subnet(n.Subnet)
	if st.rec == nil {
		return st, nil
	}
	old, err := DecodeNetwork(st.rec.Value)
	if err != nil || old.Subnet == n.Subnet {
		return st, nil
	}
	// The network's subnet moved; our reservation of the old one goes with it.
	st.oldSub = old.Subnet
	if kv := st.subnet(old.Subnet); kv != nil {
		if _, mine := r.claimant(kv, old.Network, st.host); mine {
			st.oldRes = kv
		}
	}
	return st, nil
}

// subnet returns the entry at exactly p, nil when absent.
func (st netState) subnet(p netip.Prefix) *mvccpb.KeyValue {
	for _, e := range st.subnets {
		if e.prefix == p {
			return e.kv
		}
	}
	return nil
}

// claimant says who holds a reservation key. ok is true when it is free or
// our own reservation of network (not one on a duplicate registrar's lease).
func (r *Registry) claimant(kv *mvccpb.KeyValue, network string, hv hostView) (string, bool) {
	if kv == nil {
		return "", true
	}
	l, err := flannel.Decode(kv.Value)
	if err != nil {
		return fmt.Sprintf("an unparsable value (%v)", err), false
	}
	if l.BackendType != flannel.BackendReservation {
		return fmt.Sprintf("a flannel %s lease of PublicIP %s", l.BackendType, l.PublicIP), false
	}
	d, err := l.Reservation()
	if err != nil {
		return fmt.Sprintf("an invalid reservation (%v)", err), false
	}
	if d.Host != r.cfg.Host {
		return fmt.Sprintf("host %s network %s", d.Host, d.Network), false
	}
	if dup, foreign := hv.foreignReservation(kv); foreign {
		return fmt.Sprintf("%s network %s", dup, d.Network), false
	}
	if d.Network != network {
		return fmt.Sprintf("this host's network %s", d.Network), false
	}
	return "", true
}

// conflict withdraws what we publish for n, in one guarded transaction: our
// record (whatever subnet it names: peers must not route a subnet to us that
// we do not hold, nor keep routing the old one after it changed) and our
// reservations of n at the record's subnet and at n.Subnet. It returns ce,
// with Withdrawn set when something was deleted.
func (r *Registry) conflict(ctx context.Context, n Network, st netState, ce *ConflictError) error {
	var (
		guards []clientv3.Cmp
		ops    []clientv3.Op
	)
	drop := func(kv *mvccpb.KeyValue) {
		guards = append(guards, guard(string(kv.Key), kv))
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	if st.rec != nil {
		drop(st.rec)
		if old, err := DecodeNetwork(st.rec.Value); err == nil {
			ce.WithdrawnSubnet = old.Subnet
		}
	}
	if st.oldRes != nil {
		drop(st.oldRes)
	}
	if _, mine := r.claimant(st.res, n.Network, st.host); mine && st.res != nil {
		drop(st.res)
	}
	if len(ops) == 0 {
		return ce
	}
	resp, err := r.cfg.Client.Txn(ctx).If(guards...).Then(ops...).Commit()
	switch {
	case err != nil:
		// ce is context, not the cause: wrapping it would let errors.As
		// report a conflict although the withdrawal itself failed.
		return fmt.Errorf("withdraw network %s after conflict (%v): %w", n.Network, ce, err) //nolint:errorlint // ce deliberately not wrapped
	case !resp.Succeeded:
		return errRetry
	}
	ce.Withdrawn = true
	return ce
}

// DeleteResult says what DeleteNetwork deleted.
type DeleteResult struct {
	Record       bool           // the network record
	RecordSubnet netip.Prefix   // the subnet the deleted record named, if it parsed
	Reservations []netip.Prefix // our reservations of the network
	// Duplicate is set when the record or a reservation belongs to another
	// registrar using this host's name: it was left alone.
	Duplicate DuplicateHost
}

// Deleted says whether anything was deleted.
func (d DeleteResult) Deleted() bool { return d.Record || len(d.Reservations) > 0 }

// Subnet is the network's subnet for messages: the record's, else the first
// reservation's.
func (d DeleteResult) Subnet() netip.Prefix {
	if d.RecordSubnet.IsValid() || len(d.Reservations) == 0 {
		return d.RecordSubnet
	}
	return d.Reservations[0]
}

// DeleteNetwork unregisters network: its record, and the reservations of
// network at the record's subnet and at each hint (subnets where a
// reservation of ours for network may remain without a record). Other
// claimants' keys are never touched, nor entries of this host's name that
// belong to another registrar (told apart by id, which must be known).
// Deleting what is absent is not an error.
func (r *Registry) DeleteNetwork(ctx context.Context, network string, id Identity, hints ...netip.Prefix) (DeleteResult, error) {
	if !id.Known() {
		return DeleteResult{}, fmt.Errorf("delete network %s: this host's identity is not known yet", network)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	for range txnAttempts {
		res, err := r.deleteNetworkOnce(ctx, network, id, hints)
		if err == nil || !errors.Is(err, errRetry) {
			return res, err
		}
		lastErr = err
	}
	return DeleteResult{}, fmt.Errorf("delete network %s: %w", network, lastErr)
}

func (r *Registry) deleteNetworkOnce(ctx context.Context, network string, id Identity, hints []netip.Prefix) (DeleteResult, error) {
	recKey := r.cfg.Keys.Network(r.cfg.Host, network)
	resp, err := r.cfg.Client.Txn(ctx).Then(append([]clientv3.Op{
		clientv3.OpGet(r.cfg.Keys.HostNetworks(r.cfg.Host), clientv3.WithPrefix()),
	}, r.hostOps()...)...).Commit()
	if err != nil {
		return DeleteResult{}, fmt.Errorf("read %s: %w", recKey, err)
	}
	rev := resp.Header.Revision
	hr := readHost(resp.Responses[1].GetResponseRange(), resp.Responses[2].GetResponseRange())
	hv := r.viewHost(resp.Responses[0].GetResponseRange().Kvs, r.Lease(), id, r.live(hr, r.current(hostLease)))
	var (
		res    DeleteResult
		guards []clientv3.Cmp
		ops    []clientv3.Op
	)
	subnets := slices.Clone(hints)
	if kv := hv.records[recKey]; kv != nil {
		if dup, foreign := r.duplicateOf(kv, r.Lease(), id, hv.live); foreign {
			res.Duplicate = dup
		} else {
			guards = append(guards, guard(recKey, kv))
			ops = append(ops, clientv3.OpDelete(recKey))
			res.Record = true
			if old, err := DecodeNetwork(kv.Value); err == nil {
				res.RecordSubnet = old.Subnet
				subnets = append([]netip.Prefix{old.Subnet}, subnets...)
			}
		}
	}
	for _, p := range uniquePrefixes(subnets) {
		key := r.cfg.Keys.Subnet(p)
		g, err := r.cfg.Client.Get(ctx, key, clientv3.WithRev(rev))
		if err != nil {
			return DeleteResult{}, fmt.Errorf("read %s: %w", key, err)
		}
		kv := first(g.Kvs)
		if kv == nil {
			continue
		}
		if dup, foreign := hv.foreignReservation(kv); foreign {
			res.Duplicate = dup
			continue
		}
		if _, mine := r.claimant(kv, network, hv); mine {
			guards = append(guards, guard(key, kv))
			ops = append(ops, clientv3.OpDelete(key))
			res.Reservations = append(res.Reservations, p)
		}
	}
	if len(ops) == 0 {
		return DeleteResult{Duplicate: res.Duplicate}, nil
	}
	if err := r.commit(ctx, regLease, 0, append(guards, r.hostGuards(rev)...), ops); err != nil {
		return DeleteResult{}, err
	}
	return res, nil
}

// OwnNetworks returns the names of this host's networks in etcd: those with a
// record, and those with a reservation of ours (a record may be missing after
// a crash or a hand edit). Sorted, without duplicates. See Owned.
func (r *Registry) OwnNetworks(ctx context.Context, id Identity) ([]string, []DuplicateHost, error) {
	own, dups, err := r.Owned(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(own))
	for name := range own {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, dups, nil
}

// Owned returns this host's networks in etcd with the subnets of their record
// and of their reservations. Entries of this host's name that belong to
// another registrar (by id; all count as ours while id is unknown) are left
// out and returned as duplicates, one per registrar.
func (r *Registry) Owned(ctx context.Context, id Identity) (map[string][]netip.Prefix, []DuplicateHost, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	prefix := r.cfg.Keys.HostNetworks(r.cfg.Host)
	resp, err := r.cfg.Client.Txn(ctx).Then(append([]clientv3.Op{
		clientv3.OpGet(prefix, clientv3.WithPrefix()),
		clientv3.OpGet(r.cfg.Keys.Subnets(), clientv3.WithPrefix()),
	}, r.hostOps()...)...).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("list own networks: %w", err)
	}
	cur := r.Lease()
	recs := resp.Responses[0].GetResponseRange().Kvs
	hr := readHost(resp.Responses[2].GetResponseRange(), resp.Responses[3].GetResponseRange())
	hv := r.viewHost(recs, cur, id, r.live(hr, r.current(hostLease)))
	own := map[string][]netip.Prefix{}
	for _, kv := range recs {
		pk, err := r.cfg.Keys.Parse(string(kv.Key))
		if err != nil || pk.Kind != KindNetwork {
			continue // not a record key (e.g. deeper path): not ours to manage
		}
		if _, foreign := r.duplicateOf(kv, cur, id, hv.live); foreign {
			continue
		}
		var subs []netip.Prefix
		if n, err := DecodeNetwork(kv.Value); err == nil {
			subs = append(subs, n.Subnet)
		}
		own[pk.Network] = append(own[pk.Network], subs...)
	}
	for _, e := range r.subnetEntries(resp.Responses[1].GetResponseRange().Kvs) {
		l, err := flannel.Decode(e.kv.Value)
		if err != nil {
			continue
		}
		if _, foreign := hv.foreignReservation(e.kv); foreign {
			continue
		}
		if d, err := l.Reservation(); err == nil && d.Host == r.cfg.Host {
			own[d.Network] = append(own[d.Network], e.prefix)
		}
	}
	for name, subs := range own {
		own[name] = uniquePrefixes(subs)
	}
	return own, hv.duplicates(), nil
}

// ---- host record ----

// PutHost writes this host's record on the host liveness lease; nothing is
// written when the value and the lease are unchanged. It reports whether it
// wrote. A host record of this name on another lease with another PublicIP
// belongs to another registrar using our name: it is left alone and PutHost
// returns a *DuplicateHostError.
func (r *Registry) PutHost(ctx context.Context, h HostRecord) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	if h.Host == "" {
		h.Host = r.cfg.Host
	}
	if h.Host != r.cfg.Host {
		return false, fmt.Errorf("put host record: host %q is not this host %q", h.Host, r.cfg.Host)
	}
	val, err := json.Marshal(h)
	if err != nil {
		return false, fmt.Errorf("encode host record: %w", err)
	}
	ident := Identity{}
	if ip, err := netip.ParseAddr(h.PublicIP); err == nil {
		ident.PublicIP = ip
	}
	key := r.cfg.Keys.Host(h.Host)
	var lastErr error
	for range txnAttempts {
		id, err := r.lease(ctx, hostLease)
		if err != nil {
			return false, err
		}
		g, err := r.cfg.Client.Txn(ctx).Then(r.hostOps()...).Commit()
		if err != nil {
			return false, fmt.Errorf("read %s: %w", key, err)
		}
		hr := readHost(g.Responses[0].GetResponseRange(), g.Responses[1].GetResponseRange())
		kv := hr.host
		if kv != nil && string(kv.Value) == string(val) && clientv3.LeaseID(kv.Lease) == id {
			return false, nil
		}
		if d, dup := r.hostHeldBy(kv, id, ident); dup {
			// Tell the holder we are alive, so it leaves our entries alone.
			if err := r.markLive(ctx, ident, hr); err != nil && !errors.Is(err, errRetry) {
				return false, err
			}
			return false, &DuplicateHostError{d}
		}
		err = r.commit(ctx, hostLease, id, []clientv3.Cmp{guard(key, kv)},
			[]clientv3.Op{clientv3.OpPut(key, string(val), clientv3.WithLease(id))})
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, errRetry) {
			return false, err
		}
		lastErr = err
	}
	return false, fmt.Errorf("put host record %s: %w", key, lastErr)
}

// hostHeldBy says whether the host record kv belongs to another live
// registrar: on another liveness lease (alive, or it would be gone) with
// another PublicIP.
func (r *Registry) hostHeldBy(kv *mvccpb.KeyValue, cur clientv3.LeaseID, id Identity) (DuplicateHost, bool) {
	if kv == nil || !id.Known() || clientv3.LeaseID(kv.Lease) == cur {
		return DuplicateHost{}, false
	}
	old, err := DecodeHost(kv.Value)
	if err != nil {
		return DuplicateHost{}, false
	}
	ip, err := netip.ParseAddr(old.PublicIP)
	if err != nil || ip == id.PublicIP {
		return DuplicateHost{}, false
	}
	return DuplicateHost{Host: r.cfg.Host, PublicIP: old.PublicIP, VtepMAC: old.VtepMAC, Key: string(kv.Key)}, true
}

// markLive makes sure others of our host name can tell we are alive before
// any entry of ours is written, so that they never take our entries for
// leftovers of a dead instance: the host record when it is absent (a minimal
// one; PutHost completes it), else our liveness marker (Keys.Registrar) when
// the host record carries another PublicIP. Both go on the host liveness
// lease. hr is what was read.
func (r *Registry) markLive(ctx context.Context, id Identity, hr hostRead) error {
	cur := r.current(hostLease)
	if !id.Known() || hr.ours(cur) || r.marked(hr, id.PublicIP, cur) {
		return nil
	}
	key, guards := r.cfg.Keys.Host(r.cfg.Host), []clientv3.Cmp{guard(r.cfg.Keys.Host(r.cfg.Host), nil)}
	if hr.host != nil {
		if h, err := DecodeHost(hr.host.Value); err == nil && h.PublicIP == id.PublicIP.String() {
			return nil // the host record says our PublicIP is alive
		}
		key, guards = r.cfg.Keys.Registrar(r.cfg.Host, id.PublicIP), nil
	}
	lease, err := r.lease(ctx, hostLease)
	if err != nil {
		return err
	}
	val, err := json.Marshal(HostRecord{Host: r.cfg.Host, PublicIP: id.PublicIP.String(), VtepMAC: id.VtepMAC.String()})
	if err != nil {
		return fmt.Errorf("encode liveness marker: %w", err)
	}
	return r.commit(ctx, hostLease, lease, guards, []clientv3.Op{clientv3.OpPut(key, string(val), clientv3.WithLease(lease))})
}

// current returns the lease of kind, 0 when none is granted.
func (r *Registry) current(kind leaseKind) clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases[kind]
}

// ---- helpers ----

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

// recordFields names the fields of want that differ from the stored value
// old; "record" when old does not parse.
func recordFields(old []byte, want NetworkRecord) []string {
	var o NetworkRecord
	if err := json.Unmarshal(old, &o); err != nil {
		return []string{"record"}
	}
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("Host", o.Host != want.Host)
	add("Network", o.Network != want.Network)
	add("NetworkID", o.NetworkID != want.NetworkID)
	add("Subnet", o.Subnet != want.Subnet)
	add("Gateway", o.Gateway != want.Gateway)
	add("PublicIP", o.PublicIP != want.PublicIP)
	add("VtepMAC", o.VtepMAC != want.VtepMAC)
	add("VNI", o.VNI != want.VNI)
	if len(out) == 0 {
		out = append(out, "record") // same fields, other bytes (e.g. extra fields)
	}
	return out
}

func uniquePrefixes(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
