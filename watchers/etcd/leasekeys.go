package etcd

// This file: the lease keys of each IPv4 subnet, held compactly.

import (
	"net/netip"
	"slices"
	"strconv"
)

// leaseKeys holds, per IPv4 subnet, the lease keys that name it, sorted.
// Nearly every subnet has one key, its plain one (<prefix>10.5.35.0-24):
// that key is implied by the subnet and held as the subnet alone, so
// 10,000 leases cost one small map entry each instead of a slice, a key
// string and a larger entry (1.7 MB of the daemon's peak heap). Subnets
// with other keys (flanneld's dual-stack "10.5.35.0-24&fd00::-64") hold
// them, sorted, in other.
type leaseKeys struct {
	prefix string                    // Keys.Subnets()
	plain  map[v4Prefix]struct{}     // subnets whose plain key exists
	other  map[netip.Prefix][]string // per subnet, its keys but the plain one, sorted
}

// v4Prefix is an IPv4 prefix in 5 bytes (a netip.Prefix is 32): the
// address and the length.
type v4Prefix [5]byte

func toV4(p netip.Prefix) v4Prefix {
	a := p.Addr().As4()
	return v4Prefix{a[0], a[1], a[2], a[3], byte(p.Bits())}
}

func newLeaseKeys(prefix string, size int) *leaseKeys {
	return &leaseKeys{prefix: prefix, plain: make(map[v4Prefix]struct{}, size), other: map[netip.Prefix][]string{}}
}

// isPlain says whether key is p's plain key, without building that key.
func (l *leaseKeys) isPlain(p netip.Prefix, key string) bool {
	if !p.Addr().Is4() {
		return false // lease keys name IPv4 subnets; another is held in full
	}
	var buf [64]byte
	b := p.Addr().AppendTo(buf[:0])
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(p.Bits()), 10)
	return len(key) == len(l.prefix)+len(b) && key[:len(l.prefix)] == l.prefix && key[len(l.prefix):] == string(b)
}

// keys returns p's keys, sorted (a fresh slice).
func (l *leaseKeys) keys(p netip.Prefix) []string {
	var ks []string
	if p.Addr().Is4() {
		if _, ok := l.plain[toV4(p)]; ok {
			ks = append(ks, l.prefix+p.Addr().String()+"-"+strconv.Itoa(p.Bits()))
		}
	}
	ks = append(ks, l.other[p]...)
	slices.Sort(ks)
	return ks
}

// first returns p's first key in key order, "" when it has none.
func (l *leaseKeys) first(p netip.Prefix) string {
	if ks := l.keys(p); len(ks) > 0 {
		return ks[0]
	}
	return ""
}

// add records key as one of p's keys; false when it was one already.
func (l *leaseKeys) add(p netip.Prefix, key string) bool {
	if l.isPlain(p, key) {
		if _, ok := l.plain[toV4(p)]; ok {
			return false
		}
		l.plain[toV4(p)] = struct{}{}
		return true
	}
	ks := l.other[p]
	i, found := slices.BinarySearch(ks, key)
	if found {
		return false
	}
	l.other[p] = slices.Insert(ks, i, key)
	return true
}

// remove forgets key as one of p's keys; false when it was none.
func (l *leaseKeys) remove(p netip.Prefix, key string) bool {
	if l.isPlain(p, key) {
		if _, ok := l.plain[toV4(p)]; !ok {
			return false
		}
		delete(l.plain, toV4(p))
		return true
	}
	ks := l.other[p]
	i, found := slices.BinarySearch(ks, key)
	if !found {
		return false
	}
	if ks = slices.Delete(ks, i, i+1); len(ks) == 0 {
		delete(l.other, p)
	} else {
		l.other[p] = ks
	}
	return true
}

// onlyPlain says whether p's only key is its plain one: the common case,
// answered without building any key.
func (l *leaseKeys) onlyPlain(p netip.Prefix) bool {
	if !p.Addr().Is4() {
		return false
	}
	_, ok := l.plain[toV4(p)]
	return ok && len(l.other[p]) == 0
}
