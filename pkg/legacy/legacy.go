// Package legacy recognises what the original bash tool left in etcd, so the
// registrar can report it once instead of warning about each key on every
// re-list, and move aside what is safe to move:
//
//   - <ConfigPrefix>/<host>/<network> holding plain CIDR text (the original's
//     network entries; ours are JSON),
//   - <ConfigPrefix>/_host_status/… (its host status entries),
//   - <parent of ConfigPrefix>/_exists (its "initialised" marker),
//   - a flannel vxlan lease with PublicIP 127.0.0.1 (written when it could not
//     find the host's address; every flanneld would send that subnet's
//     traffic to its own loopback).
//
// Nothing is deleted without a copy: Quarantine copies the value under
// <ConfigPrefix>/_quarantine/ and deletes the key in one transaction that
// fails when the key changed since it was read.
package legacy

import (
	"context"
	"fmt"
	"net/netip"
	"path"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// Kind is a kind of leftover.
type Kind string

// Kinds of leftovers.
const (
	NetworkText   Kind = "network-text"   // <ConfigPrefix>/<host>/<net> = "10.5.35.0/24"
	HostStatus    Kind = "host-status"    // <ConfigPrefix>/_host_status/…
	Exists        Kind = "exists"         // <parent of ConfigPrefix>/_exists
	LoopbackVXLAN Kind = "loopback-lease" // flannel vxlan lease with PublicIP 127.0.0.1
)

// HostStatusDir is the original's host status directory under the config prefix.
const HostStatusDir = "_host_status"

// Leftover is one key the original tool left.
type Leftover struct {
	Kind  Kind
	Key   string
	Host  string // the host it belongs to, when the key says
	Value string
}

// ExistsKey is the original's marker key: <parent of ConfigPrefix>/_exists.
func ExistsKey(k registry.Keys) string { return path.Dir(k.ConfigPrefix) + "/_exists" }

// Classify says whether key (holding value) is a leftover of the original
// tool, and which.
func Classify(k registry.Keys, key string, value []byte) (Leftover, bool) {
	v := strings.TrimSpace(string(value))
	lo := Leftover{Key: key, Value: string(value)}
	if key == ExistsKey(k) {
		lo.Kind = Exists
		return lo, true
	}
	if rest, ok := strings.CutPrefix(key, k.Subnets()); ok {
		if _, err := flannel.ParseSubnetKey(rest); err != nil {
			return Leftover{}, false
		}
		l, err := flannel.Decode(value)
		if err != nil || l.BackendType != flannel.BackendVXLAN {
			return Leftover{}, false
		}
		if ip, err := netip.ParseAddr(l.PublicIP); err == nil && ip.IsLoopback() {
			lo.Kind = LoopbackVXLAN
			return lo, true
		}
		return Leftover{}, false
	}
	rest, ok := strings.CutPrefix(key, k.Records())
	if !ok {
		return Leftover{}, false
	}
	parts := strings.Split(rest, "/")
	if parts[0] == HostStatusDir {
		lo.Kind = HostStatus
		if len(parts) > 1 {
			lo.Host = parts[1]
		}
		return lo, true
	}
	if len(parts) != 2 || parts[0] == "" || strings.HasPrefix(parts[0], "_") {
		return Leftover{}, false
	}
	if _, err := netip.ParsePrefix(v); err == nil {
		lo.Kind, lo.Host = NetworkText, parts[0]
		return lo, true
	}
	return Leftover{}, false
}

// Movable says whether this host may move lo aside: loopback leases (nobody
// can use them) and the original's entries of this host's own name (nobody
// else writes them). Other hosts' entries are theirs to clean up.
func (lo Leftover) Movable(host string) bool {
	switch lo.Kind {
	case LoopbackVXLAN:
		return true
	case NetworkText, HostStatus:
		return lo.Host == host
	}
	return false
}

// Quarantine copies the value of key, as it was at modRevision, under
// <ConfigPrefix>/_quarantine/ and deletes key, in one transaction. It
// returns false (and no error) when the key changed or went away meanwhile.
func Quarantine(ctx context.Context, c *clientv3.Client, k registry.Keys, key string, modRevision int64, value string) (bool, error) {
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRevision)).
		Then(clientv3.OpPut(k.QuarantineKey(key), value), clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("quarantine %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

// Scan lists every leftover under both prefixes and the marker key.
func Scan(ctx context.Context, c *clientv3.Client, k registry.Keys) ([]Leftover, error) {
	var out []Leftover
	for _, p := range []string{k.Records(), k.Subnets()} {
		resp, err := c.Get(ctx, p, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", p, err)
		}
		for _, kv := range resp.Kvs {
			if lo, ok := Classify(k, string(kv.Key), kv.Value); ok {
				out = append(out, lo)
			}
		}
	}
	resp, err := c.Get(ctx, ExistsKey(k))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ExistsKey(k), err)
	}
	for _, kv := range resp.Kvs {
		out = append(out, Leftover{Kind: Exists, Key: string(kv.Key), Value: string(kv.Value)})
	}
	return out, nil
}

// Summary counts leftovers by kind, e.g. "network-text=3 host-status=2".
func Summary(los []Leftover) map[Kind]int {
	m := map[Kind]int{}
	for _, lo := range los {
		m[lo.Kind]++
	}
	return m
}
