package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
)

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
// no peer routes a subnet we do not hold. A lease the original tool left at
// n.Subnet (see legacyLease: never a flannel reservation) is copied under
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
	legacy := r.legacyLease(st.res, ident, st.subnets)
	if claimant, ok := r.claimant(st.res, n.Network, st.host); !ok && !legacy {
		return PutResult{}, r.conflict(ctx, n, st, &ConflictError{Subnet: n.Subnet, Network: n.Network, Claimant: claimant, Key: resKey})
	}
	if e, claimant, ok := r.overlapping(st.subnets, n.Subnet, n.Network, ident, st.host); ok {
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
	st.res = st.subnet(r.cfg.Keys, n.Subnet)
	if st.rec == nil {
		return st, nil
	}
	old, err := DecodeNetwork(st.rec.Value)
	if err != nil || old.Subnet == n.Subnet {
		return st, nil
	}
	// The network's subnet moved; our reservation of the old one goes with it.
	st.oldSub = old.Subnet
	if kv := st.subnet(r.cfg.Keys, old.Subnet); kv != nil {
		if _, mine := r.claimant(kv, old.Network, st.host); mine {
			st.oldRes = kv
		}
	}
	return st, nil
}

// subnet returns the entry at the reservation key of p (not a dual-stack
// key of p: overlapping judges those), nil when absent.
func (st netState) subnet(keys Keys, p netip.Prefix) *mvccpb.KeyValue {
	for _, e := range st.subnets {
		if e.prefix == p && string(e.kv.Key) == keys.Subnet(p) {
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
	add("Groups", !slices.Equal(o.Groups, want.Groups))
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
