package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
