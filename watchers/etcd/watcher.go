// Package etcd mirrors our records and flannel's leases from etcd into the
// state store: list both prefixes at one revision, then watch them from the
// next revision; re-list when a watch falls behind compaction or ends (no
// leader, lost stream), with backoff between failed attempts.
//
// Every key is decoded and validated before it reaches the store. An invalid
// item (garbage value, 127.0.0.1 PublicIP, bad MAC, a record whose key and
// value disagree) is skipped, counted and reported once per key and revision
// through OnInvalid; it never stops the watcher.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Source is the store's sync source name of this watcher.
const Source = "etcd"

// DefaultListTimeout bounds one list of both prefixes.
const DefaultListTimeout = 30 * time.Second

// Options configure a Watcher.
type Options struct {
	Client *clientv3.Client
	Keys   registry.Keys
	Store  *state.Store
	// OnInvalid is called once per invalid key and revision, from Run's
	// goroutine; it must not block. Optional.
	OnInvalid func(key string, modRevision int64, err error)
	// OnRelist is called from Run's goroutine before each re-list with its
	// reason (e.g. "compacted"). Optional.
	OnRelist func(reason string)
	// Backoff returns the policy between failed attempts; nil: exponential
	// from 100ms to 5s, forever.
	Backoff     func() backoff.BackOff
	ListTimeout time.Duration // 0: DefaultListTimeout
}

// Stats are the watcher's counters.
type Stats struct {
	Lists     uint64 // successful lists, the first one included
	Relists   uint64 // successful lists after the first
	Compacted uint64 // watches that fell behind compaction
	Events    uint64 // watch events applied
	Invalid   uint64 // distinct invalid (key, revision) pairs seen
	Revision  int64  // revision the store reflects (lowest of both watches)
}

// Watcher is the etcd source of the store. Run is its only goroutine.
type Watcher struct {
	o Options

	// Owned by Run's goroutine.
	revs     [2]int64 // per watched prefix: last revision applied
	listed   bool
	needList bool

	lists, relists, compacted, events, invalid atomic.Uint64
	revision                                   atomic.Int64

	mu        sync.Mutex       // guards invalidAt
	invalidAt map[string]int64 // key -> revision of the invalid value there now
}

// New returns a watcher; call Run.
func New(o Options) (*Watcher, error) {
	if o.Client == nil || o.Store == nil {
		return nil, errors.New("etcd watcher: Client and Store are required")
	}
	if o.Keys.Records() == "/" || o.Keys.Subnets() == "/subnets/" {
		return nil, errors.New("etcd watcher: empty key prefixes")
	}
	if o.ListTimeout <= 0 {
		o.ListTimeout = DefaultListTimeout
	}
	if o.Backoff == nil {
		o.Backoff = func() backoff.BackOff {
			return backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(100*time.Millisecond),
				backoff.WithMaxInterval(5*time.Second),
				backoff.WithMaxElapsedTime(0))
		}
	}
	return &Watcher{o: o, invalidAt: map[string]int64{}}, nil
}

// Invalid returns how many distinct invalid (key, revision) pairs were seen.
func (w *Watcher) Invalid() uint64 { return w.invalid.Load() }

// InvalidKeys returns the keys that hold an invalid value now, with its revision.
func (w *Watcher) InvalidKeys() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int64, len(w.invalidAt))
	for k, v := range w.invalidAt {
		out[k] = v
	}
	return out
}

// Stats returns the counters.
func (w *Watcher) Stats() Stats {
	return Stats{
		Lists: w.lists.Load(), Relists: w.relists.Load(), Compacted: w.compacted.Load(),
		Events: w.events.Load(), Invalid: w.invalid.Load(), Revision: w.revision.Load(),
	}
}

// Run lists, then watches, until ctx ends; it returns nil then. A Watcher
// that ran before resumes watching from the revision it reached (re-listing
// if that revision was compacted meanwhile). Run must not be called
// concurrently with itself.
func (w *Watcher) Run(ctx context.Context) error {
	b := w.o.Backoff()
	reason := "" // why the next list is a re-list
	w.needList = !w.listed
	for ctx.Err() == nil {
		if w.needList {
			if err := w.list(ctx, reason); err != nil {
				if !wait(ctx, b) {
					break
				}
				continue
			}
		}
		var retryNow, progressed bool
		reason, retryNow, progressed = w.watch(ctx)
		w.needList = true
		if progressed {
			// Only a watch that delivered something resets the backoff: a
			// list that works followed by a watch that fails at once (no
			// leader) must not spin.
			b.Reset()
		}
		if !retryNow && !wait(ctx, b) {
			break
		}
	}
	return nil
}

// wait sleeps for the next backoff interval; false when ctx ended.
func wait(ctx context.Context, b backoff.BackOff) bool {
	d := b.NextBackOff()
	if d == backoff.Stop {
		d = 5 * time.Second
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// list reads both prefixes at one revision into the store.
func (w *Watcher) list(ctx context.Context, reason string) error {
	trigger := "etcd:list"
	if w.listed {
		if reason == "" {
			reason = "resume"
		}
		trigger = "etcd:relist (" + reason + ")"
		if w.o.OnRelist != nil {
			w.o.OnRelist(reason)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, w.o.ListTimeout)
	defer cancel()
	resp, err := w.o.Client.Txn(lctx).Then(
		clientv3.OpGet(w.o.Keys.Records(), clientv3.WithPrefix()),
		clientv3.OpGet(w.o.Keys.Subnets(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("list %s and %s: %w", w.o.Keys.Records(), w.o.Keys.Subnets(), err)
	}
	view := state.EtcdView{
		Networks: map[string]registry.Network{},
		Leases:   map[netip.Prefix]state.Lease{},
		Hosts:    map[string]registry.HostRecord{},
	}
	seen := map[string]bool{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			seen[string(kv.Key)] = true
			it, err := w.decode(kv)
			switch {
			case err != nil:
				w.reportInvalid(kv, err)
			case it.kind == registry.KindNetwork:
				view.Networks[it.key] = it.network
			case it.kind == registry.KindHost:
				view.Hosts[it.host.Host] = it.host
			case it.kind == registry.KindSubnet:
				view.Leases[it.lease.Subnet] = it.lease
			}
		}
	}
	w.forgetInvalidExcept(seen)
	w.o.Store.ReplaceEtcd(view, trigger)
	w.o.Store.SetSynced(Source, trigger)
	rev := resp.Header.Revision
	w.revs = [2]int64{rev, rev}
	w.revision.Store(rev)
	if w.listed {
		w.relists.Add(1)
	}
	w.listed = true
	w.lists.Add(1)
	return nil
}

// watch watches both prefixes from where the store is until the watch ends.
// It returns the reason, whether to re-list at once (compaction) rather than
// after a backoff, and whether the watch delivered anything.
func (w *Watcher) watch(ctx context.Context) (reason string, retryNow, progressed bool) {
	// RequireLeader: a member that lost its cluster cancels the watch instead
	// of leaving it silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	prefixes := [2]string{w.o.Keys.Records(), w.o.Keys.Subnets()}
	var chs [2]clientv3.WatchChan
	for i, p := range prefixes {
		chs[i] = w.o.Client.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(w.revs[i]+1),
			clientv3.WithProgressNotify())
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
		case wr, ok = <-chs[0]:
		case wr, ok = <-chs[1]:
			i = 1
		}
		if !ok {
			return "watch closed", false, progressed
		}
		if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			w.compacted.Add(1)
			return "compacted", true, progressed
		}
		if err := wr.Err(); err != nil || wr.Canceled {
			return fmt.Sprintf("watch ended: %v", err), false, progressed
		}
		progressed = true
		w.apply(i, wr)
	}
}

// apply writes one watch response's events to the store.
func (w *Watcher) apply(i int, wr clientv3.WatchResponse) {
	for _, ev := range wr.Events {
		w.events.Add(1)
		key := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			w.clearInvalid(key)
			w.remove(key, "etcd:delete "+key)
		} else {
			trigger := "etcd:put " + key
			it, err := w.decode(ev.Kv)
			if err != nil {
				w.reportInvalid(ev.Kv, err)
				w.remove(key, trigger) // a valid value there before is gone now
			} else {
				w.clearInvalid(key)
				w.put(it, trigger)
			}
		}
		w.revs[i] = max(w.revs[i], ev.Kv.ModRevision)
	}
	if wr.IsProgressNotify() {
		w.revs[i] = max(w.revs[i], wr.Header.Revision)
	}
	w.revision.Store(min(w.revs[0], w.revs[1]))
}

func (w *Watcher) put(it item, trigger string) {
	switch it.kind {
	case registry.KindNetwork:
		w.o.Store.PutNetwork(it.key, it.network, trigger)
	case registry.KindHost:
		w.o.Store.PutHost(it.host, trigger)
	case registry.KindSubnet:
		w.o.Store.PutLease(it.lease, trigger)
	}
}

func (w *Watcher) remove(key, trigger string) {
	pk, err := w.o.Keys.Parse(key)
	if err != nil {
		return // never stored
	}
	switch pk.Kind {
	case registry.KindNetwork:
		w.o.Store.DeleteNetwork(key, trigger)
	case registry.KindHost:
		w.o.Store.DeleteHost(pk.Host, trigger)
	case registry.KindSubnet:
		w.o.Store.DeleteLease(pk.Subnet, trigger)
	}
}

// errIgnored marks keys that are ours but not state (quarantined copies,
// liveness markers of registrars sharing a host name, status entries).
var errIgnored = errors.New("ignored")

// item is one decoded key.
type item struct {
	kind    registry.KeyKind
	key     string
	network registry.Network
	host    registry.HostRecord
	lease   state.Lease
}

func (w *Watcher) decode(kv *mvccpb.KeyValue) (item, error) {
	key := string(kv.Key)
	if strings.HasPrefix(key, w.o.Keys.Records()+registry.QuarantineDir+"/") ||
		strings.HasPrefix(key, w.o.Keys.Records()+registry.RegistrarsDir+"/") ||
		strings.HasPrefix(key, w.o.Keys.Statuses()) {
		return item{}, errIgnored
	}
	pk, err := w.o.Keys.Parse(key)
	if err != nil {
		return item{}, err
	}
	it := item{kind: pk.Kind, key: key}
	switch pk.Kind {
	case registry.KindNetwork:
		it.network, err = DecodeNetwork(pk, kv.Value)
	case registry.KindHost:
		it.host, err = registry.DecodeHost(kv.Value)
		if err == nil && it.host.Host != pk.Host {
			err = fmt.Errorf("host record at key of host %q names host %q", pk.Host, it.host.Host)
		}
	case registry.KindSubnet:
		it.lease, err = DecodeLease(pk.Subnet, kv.Value)
	default:
		err = fmt.Errorf("unknown key kind %d", pk.Kind)
	}
	return it, err
}

// DecodeNetwork validates a network record and checks that its value names
// the host and network of its key.
func DecodeNetwork(pk registry.ParsedKey, value []byte) (registry.Network, error) {
	n, err := registry.DecodeNetwork(value)
	if err != nil {
		return registry.Network{}, err
	}
	if n.Host != pk.Host || n.Network != pk.Network {
		return registry.Network{}, fmt.Errorf("record at key of %s/%s names %s/%s", pk.Host, pk.Network, n.Host, n.Network)
	}
	return n, nil
}

// DecodeLease validates the lease of subnet p. A vxlan lease needs a usable
// PublicIP (not 0.0.0.0, loopback, multicast), a unicast VTEP MAC and a
// 24-bit VNI; our reservations need a Host and a Network; other backends
// only need to parse (they are never routed).
func DecodeLease(p netip.Prefix, value []byte) (state.Lease, error) {
	raw, err := flannel.Decode(value)
	if err != nil {
		return state.Lease{}, err
	}
	l := state.Lease{Subnet: p, Raw: raw}
	switch raw.BackendType {
	case flannel.BackendVXLAN:
		d, mac, err := raw.VXLAN()
		if err != nil {
			return state.Lease{}, fmt.Errorf("vxlan lease: %w", err)
		}
		ip, err := registry.ValidPublicIP(raw.PublicIP)
		if err != nil {
			return state.Lease{}, fmt.Errorf("vxlan lease: %w", err)
		}
		l.PublicIP, l.VNI, l.VtepMAC = ip, d.VNI, mac
	case flannel.BackendReservation:
		d, err := raw.Reservation()
		if err != nil {
			return state.Lease{}, err
		}
		l.Reservation = &d
		l.PublicIP, _ = netip.ParseAddr(raw.PublicIP) // IPv4 by Decode
	default:
		l.PublicIP, _ = netip.ParseAddr(raw.PublicIP)
	}
	return l, nil
}

// reportInvalid counts and reports kv once per key and revision.
func (w *Watcher) reportInvalid(kv *mvccpb.KeyValue, err error) {
	if errors.Is(err, errIgnored) {
		return
	}
	key := string(kv.Key)
	w.mu.Lock()
	seen := w.invalidAt[key] == kv.ModRevision
	w.invalidAt[key] = kv.ModRevision
	w.mu.Unlock()
	if seen {
		return
	}
	w.invalid.Add(1)
	if w.o.OnInvalid != nil {
		w.o.OnInvalid(key, kv.ModRevision, err)
	}
}

func (w *Watcher) clearInvalid(key string) {
	w.mu.Lock()
	delete(w.invalidAt, key)
	w.mu.Unlock()
}

// forgetInvalidExcept drops invalid keys that a list no longer saw.
func (w *Watcher) forgetInvalidExcept(seen map[string]bool) {
	w.mu.Lock()
	for k := range w.invalidAt {
		if !seen[k] {
			delete(w.invalidAt, k)
		}
	}
	w.mu.Unlock()
}
