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
	return &Registry{cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Host returns this host's name.
func (r *Registry) Host() string { return r.cfg.Host }

// Keys returns the key layout.
func (r *Registry) Keys() Keys { return r.cfg.Keys }

// Lease returns the current registration lease, 0 when none is granted.
func (r *Registry) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases[regLease]
}

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

// Run keeps the leases alive until ctx ends. When a keep-alive ends (the lease
// expired, or etcd was unreachable for longer than its TTL), the lease is
// dropped, OnLeaseLost is called and the next write grants a new one. Leases
// are not revoked when Run returns: a restarted registrar re-attaches the
// records to its new lease before the old one expires.
func (r *Registry) Run(ctx context.Context) error {
	var ks [2]keeper
	defer func() {
		ks[regLease].stop()
		ks[hostLease].stop()
	}()
	for {
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
			if err := r.keepAlive(ctx, &ks[kind], want[kind]); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case _, ok := <-ks[regLease].ch:
			r.keepAliveEnded(&ks[regLease], regLease, ok)
		case _, ok := <-ks[hostLease].ch:
			r.keepAliveEnded(&ks[hostLease], hostLease, ok)
		}
	}
}

func (r *Registry) keepAlive(ctx context.Context, k *keeper, id clientv3.LeaseID) error {
	kctx, cancel := context.WithCancel(ctx)
	ch, err := r.cfg.Client.KeepAlive(kctx, id)
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
}

// ConflictError says that another claimant holds the reservation of a subnet
// one of our networks wants. Nothing of the claimant's was changed.
type ConflictError struct {
	Subnet   netip.Prefix
	Network  string // our network
	Claimant string // who holds it, in words
	Key      string // the contested etcd key
	// Withdrawn is true when our own record of Network for Subnet existed and
	// was deleted: the reservation decides who owns a subnet, and it is not us.
	Withdrawn bool
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("subnet %s of network %s is claimed by %s (%s)", e.Subnet, e.Network, e.Claimant, e.Key)
	if e.Withdrawn {
		s += "; our record was withdrawn"
	}
	return s
}

// netState is what one read of a network's keys found.
type netState struct {
	rec    *mvccpb.KeyValue // our record, nil when absent
	res    *mvccpb.KeyValue // the reservation key of the wanted subnet, nil when absent
	oldRes *mvccpb.KeyValue // reservation at the record's old subnet, when it moved
	oldSub netip.Prefix
}

// PutNetwork registers n (its Host must be empty or this host): the record
// and the reservation of its subnet, on the registration lease, in one
// transaction. It returns a *ConflictError when the reservation key holds
// anything but our own reservation of n.Network.
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
	recKey, resKey := r.cfg.Keys.Network(n.Host, n.Network), r.cfg.Keys.Subnet(n.Subnet)
	st, err := r.readNetwork(ctx, recKey, resKey, n.Subnet)
	if err != nil {
		return PutResult{}, err
	}
	if claimant, ok := r.claimant(st.res, n.Network); !ok {
		return PutResult{}, r.conflict(ctx, n, st, resKey, claimant)
	}
	var (
		guards []clientv3.Cmp
		ops    []clientv3.Op
		res    = PutResult{Change: Unchanged}
	)
	guards = append(guards, guard(recKey, st.rec), guard(resKey, st.res))
	note := func(c Change, fields ...string) {
		res.Fields = append(res.Fields, fields...)
		res.Change = max(res.Change, c)
	}
	switch {
	case st.rec == nil:
		ops = append(ops, clientv3.OpPut(recKey, string(recVal), clientv3.WithLease(id)))
		note(Created)
	case string(st.rec.Value) != string(recVal):
		ops = append(ops, clientv3.OpPut(recKey, string(recVal), clientv3.WithLease(id)))
		note(Updated, recordFields(st.rec.Value, n.Record())...)
	case clientv3.LeaseID(st.rec.Lease) != id:
		ops = append(ops, clientv3.OpPut(recKey, string(recVal), clientv3.WithLease(id)))
		note(Reattached)
	}
	switch {
	case st.res == nil:
		ops = append(ops, clientv3.OpPut(resKey, string(resVal), clientv3.WithLease(id)))
		note(Updated, "reservation")
	case string(st.res.Value) != string(resVal):
		ops = append(ops, clientv3.OpPut(resKey, string(resVal), clientv3.WithLease(id)))
		note(Updated, "reservation")
	case clientv3.LeaseID(st.res.Lease) != id:
		ops = append(ops, clientv3.OpPut(resKey, string(resVal), clientv3.WithLease(id)))
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

// readNetwork reads the record and the reservation of subnet at one revision,
// and the reservation at the record's old subnet when it differs and is ours.
func (r *Registry) readNetwork(ctx context.Context, recKey, resKey string, subnet netip.Prefix) (netState, error) {
	resp, err := r.cfg.Client.Txn(ctx).Then(clientv3.OpGet(recKey), clientv3.OpGet(resKey)).Commit()
	if err != nil {
		return netState{}, fmt.Errorf("read %s and %s: %w", recKey, resKey, err)
	}
	st := netState{
		rec: first(resp.Responses[0].GetResponseRange().Kvs),
		res: first(resp.Responses[1].GetResponseRange().Kvs),
	}
	if st.rec == nil {
		return st, nil
	}
	old, err := DecodeNetwork(st.rec.Value)
	if err != nil || old.Subnet == subnet || !subnet.IsValid() {
		return st, nil
	}
	// The network's subnet moved; our reservation of the old one goes with it.
	st.oldSub = old.Subnet
	oldKey := r.cfg.Keys.Subnet(old.Subnet)
	g, err := r.cfg.Client.Get(ctx, oldKey, clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return netState{}, fmt.Errorf("read %s: %w", oldKey, err)
	}
	if kv := first(g.Kvs); kv != nil {
		if _, mine := r.claimant(kv, old.Network); mine {
			st.oldRes = kv
		}
	}
	return st, nil
}

// claimant says who holds a reservation key. ok is true when it is free or
// our own reservation of network.
func (r *Registry) claimant(kv *mvccpb.KeyValue, network string) (string, bool) {
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
	if d.Network != network {
		return fmt.Sprintf("this host's network %s", d.Network), false
	}
	return "", true
}

// conflict builds the ConflictError and withdraws our own record of n if it
// claims the contested subnet.
func (r *Registry) conflict(ctx context.Context, n Network, st netState, resKey, claimant string) error {
	ce := &ConflictError{Subnet: n.Subnet, Network: n.Network, Claimant: claimant, Key: resKey}
	if st.rec == nil {
		return ce
	}
	if old, err := DecodeNetwork(st.rec.Value); err == nil && old.Subnet != n.Subnet {
		return ce // our record is for another subnet; PutNetwork moves it once the new one is free
	}
	recKey := r.cfg.Keys.Network(n.Host, n.Network)
	resp, err := r.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(recKey), "=", st.rec.ModRevision)).
		Then(clientv3.OpDelete(recKey)).Commit()
	switch {
	case err != nil:
		// ce is context, not the cause: wrapping it would let errors.As
		// report a conflict although the withdrawal itself failed.
		return fmt.Errorf("withdraw %s after conflict (%v): %w", recKey, ce, err) //nolint:errorlint // ce deliberately not wrapped
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
// claimants' keys are never touched. Deleting what is absent is not an error.
func (r *Registry) DeleteNetwork(ctx context.Context, network string, hints ...netip.Prefix) (DeleteResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	for range txnAttempts {
		res, err := r.deleteNetworkOnce(ctx, network, hints)
		if err == nil || !errors.Is(err, errRetry) {
			return res, err
		}
		lastErr = err
	}
	return DeleteResult{}, fmt.Errorf("delete network %s: %w", network, lastErr)
}

func (r *Registry) deleteNetworkOnce(ctx context.Context, network string, hints []netip.Prefix) (DeleteResult, error) {
	recKey := r.cfg.Keys.Network(r.cfg.Host, network)
	g, err := r.cfg.Client.Get(ctx, recKey)
	if err != nil {
		return DeleteResult{}, fmt.Errorf("read %s: %w", recKey, err)
	}
	rev := g.Header.Revision
	var (
		res    DeleteResult
		guards []clientv3.Cmp
		ops    []clientv3.Op
	)
	subnets := slices.Clone(hints)
	if kv := first(g.Kvs); kv != nil {
		guards = append(guards, guard(recKey, kv))
		ops = append(ops, clientv3.OpDelete(recKey))
		res.Record = true
		if old, err := DecodeNetwork(kv.Value); err == nil {
			res.RecordSubnet = old.Subnet
			subnets = append([]netip.Prefix{old.Subnet}, subnets...)
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
		if _, mine := r.claimant(kv, network); mine {
			guards = append(guards, guard(key, kv))
			ops = append(ops, clientv3.OpDelete(key))
			res.Reservations = append(res.Reservations, p)
		}
	}
	if len(ops) == 0 {
		return DeleteResult{}, nil
	}
	if err := r.commit(ctx, regLease, 0, guards, ops); err != nil {
		return DeleteResult{}, err
	}
	return res, nil
}

// OwnNetworks returns the names of this host's networks in etcd: those with a
// record, and those with a reservation of ours (a record may be missing after
// a crash or a hand edit). Sorted, without duplicates.
func (r *Registry) OwnNetworks(ctx context.Context) ([]string, error) {
	own, err := r.Owned(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(own))
	for name := range own {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// Owned returns this host's networks in etcd with the subnets of their record
// and of their reservations.
func (r *Registry) Owned(ctx context.Context) (map[string][]netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	prefix := r.cfg.Keys.HostNetworks(r.cfg.Host)
	resp, err := r.cfg.Client.Txn(ctx).Then(
		clientv3.OpGet(prefix, clientv3.WithPrefix()),
		clientv3.OpGet(r.cfg.Keys.Subnets(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("list own networks: %w", err)
	}
	own := map[string][]netip.Prefix{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		pk, err := r.cfg.Keys.Parse(string(kv.Key))
		if err != nil || pk.Kind != KindNetwork {
			continue // not a record key (e.g. deeper path): not ours to manage
		}
		var subs []netip.Prefix
		if n, err := DecodeNetwork(kv.Value); err == nil {
			subs = append(subs, n.Subnet)
		}
		own[pk.Network] = append(own[pk.Network], subs...)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		p, err := flannel.ParseSubnetKey(string(kv.Key[len(r.cfg.Keys.Subnets()):]))
		if err != nil {
			continue
		}
		l, err := flannel.Decode(kv.Value)
		if err != nil {
			continue
		}
		if d, err := l.Reservation(); err == nil && d.Host == r.cfg.Host {
			own[d.Network] = append(own[d.Network], p)
		}
	}
	for name, subs := range own {
		own[name] = uniquePrefixes(subs)
	}
	return own, nil
}

// ---- host record ----

// PutHost writes this host's record on the host liveness lease; nothing is
// written when the value and the lease are unchanged. It reports whether it
// wrote.
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
	key := r.cfg.Keys.Host(h.Host)
	var lastErr error
	for range txnAttempts {
		id, err := r.lease(ctx, hostLease)
		if err != nil {
			return false, err
		}
		g, err := r.cfg.Client.Get(ctx, key)
		if err != nil {
			return false, fmt.Errorf("read %s: %w", key, err)
		}
		kv := first(g.Kvs)
		if kv != nil && string(kv.Value) == string(val) && clientv3.LeaseID(kv.Lease) == id {
			return false, nil
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
