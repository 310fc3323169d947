// Package etcd mirrors our records and flannel's leases from etcd into the
// state store: list both prefixes at one revision, then watch them from the
// next revision; re-list when a watch falls behind compaction or ends (no
// leader, lost stream), with backoff between failed attempts.
//
// etcd restored from a backup or restarted with an empty data directory
// accepts the client's resumed watch on a revision it has not reached and
// delivers nothing, without an error. The watcher therefore checks the
// header of every answer of etcd: watch events, the progress notifications
// it asks for every HeaderCheckInterval (liveness.go), and a linearizable
// read of one key, which runs only while the stream gives no answer
// (silent, or an etcd that answers no progress requests) or to confirm what
// a progress notification suggests: a revision below the one already applied,
// a raft term below the highest seen, or another cluster ID means etcd's
// history is not the one the store reflects, and the watcher re-lists
// (OnRelist reason "etcd revision went back ...", "etcd raft term went
// back ..." or "etcd cluster ID changed ..."). A re-list after a watch that
// ended is checked the same way. Each such loss is reported once through
// OnHistoryLost before the store is replaced, so that the caller can keep
// what vanished with it until its owners have written it again.
//
// In steady state the watcher sends etcd one request a second, the progress
// request on its watch stream (the stream's keep-alive), and no read.
// With Options.OnFlannelConfig, flannel's <FLANNEL_PREFIX>/config is listed
// and watched along with both prefixes, on the same stream.
//
// Lists are paginated (PageSize keys per request, every page at the first
// page's revision), so that 100,000 keys need no single giant response.
//
// Every key is decoded and validated before it reaches the store. An invalid
// item (garbage value, 127.0.0.1 PublicIP, bad MAC, a record whose key and
// value disagree, a key over 512 bytes or a value over 4 KiB, ambiguous JSON
// with duplicate or case-variant keys, a host name that breaks HOST_NAME's
// rule or a network name that breaks Docker's, a network record beyond the
// first MaxRecordsPerHost of its host in key order) is skipped, counted and
// reported once per key and revision through OnInvalid, with the rule it
// broke; it never stops the watcher.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Source is the store's sync source name of this watcher.
const Source = "etcd"

// DefaultListTimeout bounds one list of both prefixes.
const DefaultListTimeout = 30 * time.Second

// DefaultHeaderCheckInterval is how often a watching watcher asks for a
// progress notification on its watch stream, whose header shows a watch that
// etcd silently stopped serving (data loss); a stream silent for longer has
// etcd's header read instead (history.go).
const DefaultHeaderCheckInterval = time.Second

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
	// OnHistoryLost is called from Run's goroutine when an answer of etcd (a
	// watch response, a header read, or a re-list) shows that its
	// history is not the one the store reflects (it lost its data, was
	// restored from a copy, or is another cluster), before the store is
	// replaced by what etcd holds now. It must not block. Optional.
	OnHistoryLost func(HistoryLoss)
	// Backoff returns the policy between failed attempts; nil: exponential
	// from 100ms to 5s, forever.
	Backoff     func() backoff.BackOff
	ListTimeout time.Duration // 0: DefaultListTimeout
	// HeaderCheckInterval: 0 is DefaultHeaderCheckInterval; negative
	// disables the progress requests and the header reads (watch response
	// headers are still checked).
	HeaderCheckInterval time.Duration
	// OnFlannelConfig, when set, has the watcher list and watch flannel's
	// config key (Keys.FlannelConfig()) too: it is called from Run's
	// goroutine with the key's value at each list and at each change (nil
	// when the key is absent or was deleted). It must not block.
	OnFlannelConfig func(value []byte)
	// PageSize is how many keys one list request reads (0: DefaultPageSize).
	PageSize int
	// MaxRecordsPerHost caps the network records of one host name (0:
	// DefaultMaxRecordsPerHost): the first ones in key order count, the
	// others are skipped as invalid.
	MaxRecordsPerHost int
}

// DefaultPageSize is the default Options.PageSize: a list of 100,000 keys is
// 100 requests of a few hundred KiB, not one response of tens of MiB.
const DefaultPageSize = 1000

// maxSizeHint bounds the map sizes a list takes from etcd's key count.
const maxSizeHint = 1 << 20

// DefaultMaxRecordsPerHost is the default Options.MaxRecordsPerHost.
const DefaultMaxRecordsPerHost = 1000

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
	revs     [3]int64 // per watch (records, subnets, flannel config): last revision applied
	listed   bool
	needList bool
	lossSeen bool   // a loss was reported; the re-list that follows does not report it again
	cluster  uint64 // cluster ID of the last list (0: unknown)
	term     uint64 // highest raft term seen since the last list
	perHost  map[string]*hostKeys
	// Per IPv4 subnet, the lease keys that name it (a plain key and
	// dual-stack keys, "10.5.35.0-24&fd00::-64"): the store holds the
	// first one's lease, the others are reported invalid.
	leaseKeys *leaseKeys

	lists, relists, compacted, events, invalid atomic.Uint64
	revision                                   atomic.Int64
	answered                                   atomic.Int64 // unix nanoseconds of etcd's last answer (0: none)

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
	if o.HeaderCheckInterval == 0 {
		o.HeaderCheckInterval = DefaultHeaderCheckInterval
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxRecordsPerHost <= 0 {
		o.MaxRecordsPerHost = DefaultMaxRecordsPerHost
	}
	if o.Backoff == nil {
		o.Backoff = func() backoff.BackOff {
			return backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(100*time.Millisecond),
				backoff.WithMaxInterval(5*time.Second),
				backoff.WithMaxElapsedTime(0))
		}
	}
	return &Watcher{o: o, invalidAt: map[string]int64{}, perHost: map[string]*hostKeys{}, leaseKeys: newLeaseKeys(o.Keys.Subnets(), 0)}, nil
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

// LastAnswered is when etcd last answered the watcher: a watch response
// (the progress notification it asks for every HeaderCheckInterval, or
// events) whose header passed the history check, a header read, or a list
// page; zero before the first. The daemon's "etcd answers now" is read from
// here, so that the one request a second that keeps the watch stream alive
// serves both it and the check that etcd kept its history. A member that
// lost its cluster's leader answers progress requests until it cancels the
// watch (WithRequireLeader: within a few election timeouts); the watch then
// moves to another member or, with no quorum anywhere, answers stop. With
// HeaderCheckInterval negative only events and lists count.
func (w *Watcher) LastAnswered() time.Time {
	if n := w.answered.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
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

// list reads both prefixes at one revision into the store, in pages of
// PageSize keys: the first page fixes the revision, the others read at it.
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
	// The maps are sized from each prefix's key count (the first page's
	// Count): grown by doubling, 10,000 entries left their smaller tables
	// as garbage at the daemon's peak.
	view := state.EtcdView{
		Networks: map[string]registry.Network{},
		Leases:   map[netip.Prefix]state.Lease{},
		Hosts:    map[string]registry.HostRecord{},
	}
	// The keys found invalid: the others are forgotten after the list. A
	// set of every key listed (a second copy of each) was 1 MB at 10,000.
	invalid := map[string]bool{}
	bad := func(key string, kv *mvccpb.KeyValue, err error) {
		if !errors.Is(err, errIgnored) {
			invalid[key] = true
		}
		w.reportInvalid(kv, err)
	}
	perHost := map[string]*hostKeys{}
	leaseKeys := newLeaseKeys(w.o.Keys.Subnets(), 0)
	var hdr *etcdserverpb.ResponseHeader
	// Each map is still empty when its prefix's count comes (the prefixes
	// do not nest in a sane setup; if they do, the maps just grow).
	sizes := []func(int){
		func(n int) {
			if len(view.Networks) == 0 {
				view.Networks = make(map[string]registry.Network, n)
			}
		},
		func(n int) {
			if len(view.Leases) == 0 && len(leaseKeys.plain) == 0 {
				view.Leases = make(map[netip.Prefix]state.Lease, n)
				leaseKeys.plain = make(map[v4Prefix]struct{}, n)
			}
		},
	}
	for i, prefix := range []string{w.o.Keys.Records(), w.o.Keys.Subnets()} {
		err := w.listPrefix(lctx, prefix, &hdr, sizes[i], func(kv *mvccpb.KeyValue) {
			key := string(kv.Key) // once: the store and the indexes share it
			err := w.admitListed(perHost, key)
			if err == nil {
				err = w.placeListed(leaseKeys, key)
			}
			if err != nil {
				bad(key, kv, err)
				return
			}
			it, err := w.decodeAt(key, kv.Value)
			switch {
			case err != nil:
				bad(key, kv, err)
			case it.kind == registry.KindNetwork:
				view.Networks[it.key] = it.network
			case it.kind == registry.KindHost:
				view.Hosts[it.host.Host] = it.host
			case it.kind == registry.KindSubnet:
				view.Leases[it.lease.Subnet] = it.lease
			}
		})
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
	}
	var config []byte
	if w.o.OnFlannelConfig != nil {
		key := w.o.Keys.FlannelConfig()
		resp, err := w.o.Client.Get(lctx, key, clientv3.WithRev(hdr.Revision))
		if err != nil {
			return fmt.Errorf("list %s: %w", key, err)
		}
		w.answered.Store(time.Now().UnixNano())
		if len(resp.Kvs) > 0 {
			config = resp.Kvs[0].Value
		}
	}
	if w.listed && !w.lossSeen {
		// A re-list after a watch that ended (etcd restarted) is the first
		// answer of the etcd that came back.
		if applied := w.applied(); applied > 0 {
			if why := w.historyLost(hdr, applied); why != "" {
				w.reportLoss(why, applied, hdr)
			}
		}
	}
	w.lossSeen = false
	w.forgetInvalidExcept(invalid)
	w.perHost, w.leaseKeys = perHost, leaseKeys
	if w.o.OnFlannelConfig != nil {
		w.o.OnFlannelConfig(config) // before the store is synced: its first listing includes flannel's network
	}
	w.o.Store.ReplaceEtcd(view, trigger)
	w.o.Store.SetSynced(Source, trigger)
	rev := hdr.Revision
	w.revs = [3]int64{rev, rev, rev}
	w.cluster, w.term = hdr.ClusterId, hdr.RaftTerm
	w.revision.Store(rev)
	if w.listed {
		w.relists.Add(1)
	}
	w.listed = true
	w.lists.Add(1)
	return nil
}

// listPrefix reads every key under prefix in pages, calling fn for each in
// key order, after size with the number of keys under prefix. *hdr is the
// header of the first page of the list (nil before): its revision is the
// one every page is read at.
func (w *Watcher) listPrefix(ctx context.Context, prefix string, hdr **etcdserverpb.ResponseHeader, size func(int), fn func(*mvccpb.KeyValue)) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(w.o.PageSize))}
		if *hdr != nil {
			opts = append(opts, clientv3.WithRev((*hdr).Revision))
		}
		resp, err := w.o.Client.Get(ctx, from, opts...)
		if err != nil {
			return err
		}
		w.answered.Store(time.Now().UnixNano())
		if *hdr == nil {
			*hdr = resp.Header
		}
		if from == prefix {
			// Count is every key in the range; bounded so that a wrong
			// answer cannot make a huge map.
			size(int(min(max(resp.Count, 0), maxSizeHint)))
		}
		for _, kv := range resp.Kvs {
			fn(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// apply writes one watch response's events to the store. It returns a
// reason to re-list when it could not keep the per-host record cap.
func (w *Watcher) apply(ctx context.Context, i int, wr clientv3.WatchResponse) string {
	var relist string
	from := w.revs[i] // events of one revision come in one response
	for _, ev := range wr.Events {
		if ev.Kv.ModRevision <= from {
			continue // listed or applied already: the watch starts at the applied revision
		}
		w.events.Add(1)
		if i == configWatch {
			w.o.OnFlannelConfig(configValue(ev))
			w.revs[i] = ev.Kv.ModRevision
			continue
		}
		key := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			trigger := "etcd:delete " + key
			w.clearInvalid(key)
			var next string
			if lease, first, n := w.releaseLease(key); lease {
				next = n
				if first && next == "" {
					w.remove(key, trigger)
				}
			} else {
				w.remove(key, trigger)
				next = w.releaseSlot(key)
			}
			if next != "" && relist == "" {
				relist = w.admitNext(ctx, next, ev.Kv.ModRevision, trigger)
			}
		} else {
			trigger := "etcd:put " + key
			err := w.admitWatched(ev.Kv)
			if err == nil {
				err = w.placeWatched(ev.Kv)
			}
			var it item
			if err == nil {
				it, err = w.decode(ev.Kv)
			}
			var shadowed *shadowedError
			switch {
			case errors.As(err, &shadowed):
				w.reportInvalid(ev.Kv, err) // the store holds another key's lease
			case err != nil:
				w.reportInvalid(ev.Kv, err)
				w.remove(key, trigger) // a valid value there before is gone now
			default:
				w.clearInvalid(key)
				w.put(it, trigger)
			}
		}
		w.revs[i] = max(w.revs[i], ev.Kv.ModRevision)
	}
	if wr.IsProgressNotify() {
		w.revs[i] = max(w.revs[i], wr.Header.Revision)
	}
	w.revision.Store(w.lowest())
	return relist
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

// configValue is the value of flannel's config key after ev, nil when deleted.
func configValue(ev *clientv3.Event) []byte {
	if ev.Type == clientv3.EventTypeDelete {
		return nil
	}
	return ev.Kv.Value
}

// errIgnored marks keys that are ours but not state (quarantined copies,
// liveness markers of registrars sharing a host name, status entries).
var errIgnored = errors.New("ignored")
