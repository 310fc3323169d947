package registry

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
)

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
		if !r.plain(e) {
			continue // we write reservations at plain keys only
		}
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
