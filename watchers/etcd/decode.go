package etcd

// This file: decoding items and reporting the invalid ones once.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// item is one decoded key.
type item struct {
	kind    registry.KeyKind
	key     string
	network registry.Network
	host    registry.HostRecord
	lease   state.Lease
}

func (w *Watcher) decode(kv *mvccpb.KeyValue) (item, error) {
	return w.decodeAt(string(kv.Key), kv.Value)
}

// decodeAt decodes the value at key; the item keeps key (a list converts
// each key once and shares it between the store and the watcher's indexes).
func (w *Watcher) decodeAt(key string, value []byte) (item, error) {
	if strings.HasPrefix(key, w.o.Keys.Records()+registry.QuarantineDir+"/") ||
		strings.HasPrefix(key, w.o.Keys.Records()+registry.RegistrarsDir+"/") ||
		strings.HasPrefix(key, w.o.Keys.Statuses()) {
		return item{}, errIgnored
	}
	pk, err := w.o.Keys.Parse(key)
	if errors.Is(err, flannel.ErrIPv6Only) {
		return item{}, errIgnored // claims no IPv4 subnet: nothing for us
	}
	if err != nil {
		return item{}, err
	}
	it := item{kind: pk.Kind, key: key}
	switch pk.Kind {
	case registry.KindNetwork:
		it.network, err = DecodeNetwork(pk, value)
	case registry.KindHost:
		it.host, err = registry.DecodeHost(value)
		if err == nil && it.host.Host != pk.Host {
			err = fmt.Errorf("host record at key of host %q names host %q", pk.Host, it.host.Host)
		}
	case registry.KindSubnet:
		it.lease, err = DecodeLease(pk.Subnet, value)
		it.lease.Subnet6 = pk.Subnet6
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
	slim(&l.Raw)
	return l, nil
}

// slim drops what the store would otherwise keep twice of a decoded lease:
// the backend data of the two backends decoded above (VNI, VtepMAC and
// Reservation hold it; nothing reads the bytes again), and the backend type
// as its own copy of a constant. At 10,000 leases that is 10,000 small
// allocations held for the daemon's lifetime. Other backends keep their
// bytes (never routed, nothing else holds them).
func slim(raw *flannel.Lease) {
	switch raw.BackendType {
	case flannel.BackendVXLAN:
		raw.BackendType, raw.BackendData = flannel.BackendVXLAN, nil
	case flannel.BackendReservation:
		raw.BackendType, raw.BackendData = flannel.BackendReservation, nil
	}
}

// reportInvalid counts and reports kv once per key and revision.
func (w *Watcher) reportInvalid(kv *mvccpb.KeyValue, err error) {
	if errors.Is(err, errIgnored) {
		return
	}
	w.reportInvalidAt(string(kv.Key), kv.ModRevision, err)
}

func (w *Watcher) reportInvalidAt(key string, rev int64, err error) {
	w.mu.Lock()
	seen := w.invalidAt[key] == rev
	w.invalidAt[key] = rev
	w.mu.Unlock()
	if seen {
		return
	}
	w.invalid.Add(1)
	if w.o.OnInvalid != nil {
		w.o.OnInvalid(key, rev, err)
	}
}

func (w *Watcher) clearInvalid(key string) {
	w.mu.Lock()
	delete(w.invalidAt, key)
	w.mu.Unlock()
}

// forgetInvalidExcept drops the invalid keys that a list did not find
// invalid (gone, or valid now).
func (w *Watcher) forgetInvalidExcept(invalid map[string]bool) {
	w.mu.Lock()
	for k := range w.invalidAt {
		if !invalid[k] {
			delete(w.invalidAt, k)
		}
	}
	w.mu.Unlock()
}
