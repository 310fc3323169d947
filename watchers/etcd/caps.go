package etcd

// This file: the per-host record cap and one lease per IPv4 subnet.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// hostKeys are the network record keys of one host name: the first
// MaxRecordsPerHost in key order are admitted (decoded, stored), the others
// are over the cap (skipped, reported invalid). Invalid values count: the
// split depends on the keys alone, so every registrar makes the same one.
type hostKeys struct {
	admitted map[string]bool
	over     map[string]bool
}

func (w *Watcher) overCapErr(host string) error {
	return fmt.Errorf("host %s has more than %d network records: the first %d in key order are used, this one is skipped",
		host, w.o.MaxRecordsPerHost, w.o.MaxRecordsPerHost)
}

// networkHost returns the host of a network record key, "" for other keys.
func (w *Watcher) networkHost(key string) string {
	pk, err := w.o.Keys.Parse(key)
	if err != nil || pk.Kind != registry.KindNetwork {
		return ""
	}
	return pk.Host
}

// admitListed counts a listed key (lists come in key order) against its
// host's cap; an error when it is over.
func (w *Watcher) admitListed(perHost map[string]*hostKeys, key string) error {
	host := w.networkHost(key)
	if host == "" {
		return nil
	}
	hk := perHost[host]
	if hk == nil {
		hk = &hostKeys{admitted: map[string]bool{}}
		perHost[host] = hk
	}
	if len(hk.admitted) < w.o.MaxRecordsPerHost {
		hk.admitted[key] = true
		return nil
	}
	hk.markOver(key)
	return w.overCapErr(host)
}

// markOver records key as over the cap; over is made on first use (nearly
// no host has keys over it, and 2,000 hosts' empty maps were garbage kept).
func (hk *hostKeys) markOver(key string) {
	if hk.over == nil {
		hk.over = map[string]bool{}
	}
	hk.over[key] = true
}

// admitWatched places a put key among its host's keys: a new key that sorts
// before the last admitted one of a full host takes its place (that one is
// removed from the store and reported).
func (w *Watcher) admitWatched(kv *mvccpb.KeyValue) error {
	key := string(kv.Key)
	host := w.networkHost(key)
	if host == "" {
		return nil
	}
	hk := w.perHost[host]
	if hk == nil {
		hk = &hostKeys{admitted: map[string]bool{}}
		w.perHost[host] = hk
	}
	switch {
	case hk.admitted[key]:
		return nil
	case hk.over[key]:
		return w.overCapErr(host)
	case len(hk.admitted) < w.o.MaxRecordsPerHost:
		hk.admitted[key] = true
		return nil
	}
	last := ""
	for k := range hk.admitted {
		last = max(last, k)
	}
	if key > last {
		hk.markOver(key)
		return w.overCapErr(host)
	}
	delete(hk.admitted, last)
	hk.markOver(last)
	hk.admitted[key] = true
	w.remove(last, "etcd:put "+key+" (record cap)")
	w.reportInvalidAt(last, kv.ModRevision, w.overCapErr(host))
	return nil
}

// releaseSlot forgets a deleted key; when it was admitted and its host has
// keys over the cap, it returns the first of them, which is admitted now.
func (w *Watcher) releaseSlot(key string) string {
	host := w.networkHost(key)
	hk := w.perHost[host]
	if hk == nil {
		return ""
	}
	delete(hk.over, key)
	if !hk.admitted[key] {
		return ""
	}
	delete(hk.admitted, key)
	next := ""
	for k := range hk.over {
		if next == "" || k < next {
			next = k
		}
	}
	if next == "" {
		if len(hk.admitted) == 0 {
			delete(w.perHost, host)
		}
		return ""
	}
	delete(hk.over, next)
	hk.admitted[next] = true
	return next
}

// admitNext reads key, just admitted (the next record of a host at its cap,
// or the next lease key of a subnet), at rev and stores it; a re-list reason
// when it cannot be read.
func (w *Watcher) admitNext(ctx context.Context, key string, rev int64, trigger string) string {
	gctx, cancel := context.WithTimeout(ctx, w.o.ListTimeout)
	defer cancel()
	resp, err := w.o.Client.Get(gctx, key, clientv3.WithRev(rev))
	if err != nil {
		return fmt.Sprintf("record cap: cannot read %s at revision %d: %v", key, rev, err)
	}
	if len(resp.Kvs) == 0 {
		w.remove(key, trigger) // gone too; its delete event follows
		return ""
	}
	kv := resp.Kvs[0]
	it, err := w.decode(kv)
	if err != nil {
		w.reportInvalid(kv, err)
		w.remove(key, trigger)
		return ""
	}
	w.clearInvalid(key)
	w.put(it, trigger)
	return ""
}

// shadowedError: a lease key names the IPv4 subnet of another lease key that
// sorts first (e.g. a plain and a dual-stack key of one subnet).
type shadowedError struct{ key, by string }

func (e *shadowedError) Error() string {
	return fmt.Sprintf("lease key %s names the IPv4 subnet of lease key %s, which comes first in key order and is used", e.key, e.by)
}

// leasePrefix returns the IPv4 subnet of a lease key.
func (w *Watcher) leasePrefix(key string) (netip.Prefix, bool) {
	pk, err := w.o.Keys.Parse(key)
	if err != nil || pk.Kind != registry.KindSubnet {
		return netip.Prefix{}, false
	}
	return pk.Subnet, true
}

// placeListed records a listed lease key (lists come in key order); an error
// when an earlier key holds its subnet.
func (w *Watcher) placeListed(m *leaseKeys, key string) error {
	p, ok := w.leasePrefix(key)
	if !ok {
		return nil
	}
	m.add(p, key)
	if m.onlyPlain(p) {
		return nil
	}
	if first := m.first(p); first != key {
		return &shadowedError{key: key, by: first}
	}
	return nil
}

// placeWatched records a put lease key; a shadowedError when another key of
// its subnet sorts first. A new key that sorts first takes the subnet: the
// key it displaces is reported.
func (w *Watcher) placeWatched(kv *mvccpb.KeyValue) error {
	key := string(kv.Key)
	p, ok := w.leasePrefix(key)
	if !ok {
		return nil
	}
	added := w.leaseKeys.add(p, key)
	if w.leaseKeys.onlyPlain(p) {
		return nil
	}
	ks := w.leaseKeys.keys(p)
	if added && ks[0] == key && len(ks) > 1 {
		w.reportInvalidAt(ks[1], kv.ModRevision, &shadowedError{key: ks[1], by: key})
	}
	if ks[0] != key {
		return &shadowedError{key: key, by: ks[0]}
	}
	return nil
}

// releaseLease forgets a deleted lease key. lease says whether key is one;
// first whether the store held its lease; next is the key whose lease the
// store holds now instead ("" for none).
func (w *Watcher) releaseLease(key string) (lease, first bool, next string) {
	p, ok := w.leasePrefix(key)
	if !ok {
		return false, false, ""
	}
	ks := w.leaseKeys.keys(p)
	i, found := slices.BinarySearch(ks, key)
	if !found {
		return true, false, ""
	}
	w.leaseKeys.remove(p, key)
	ks = slices.Delete(ks, i, i+1)
	if i == 0 && len(ks) > 0 {
		return true, true, ks[0]
	}
	return true, i == 0, ""
}
