package etcd

import (
	"fmt"
	"net/netip"
	"testing"
)

// leaseKeys holds a subnet's plain key as the subnet alone and any other
// key of it in full; keys, first and remove see both kinds as one sorted set.
func TestLeaseKeys(t *testing.T) {
	const prefix = "/coreos.com/network/subnets/"
	p := netip.MustParsePrefix("10.5.35.0/24")
	plain := prefix + "10.5.35.0-24"
	dual := prefix + "10.5.35.0-24&fd00::-64"
	dual2 := prefix + "10.5.35.0-24&fd01::-64"
	l := newLeaseKeys(prefix, 0)

	for key, want := range map[string]bool{
		plain: true, dual: false, prefix + "10.5.35.0-25": false, prefix + "10.5.36.0-24": false,
		"/other/subnets/10.5.35.0-24": false, prefix + "10.5.35.0-2": false, prefix + "10.5.35.0-244": false,
	} {
		if got := l.isPlain(p, key); got != want {
			t.Errorf("isPlain(%s, %q) = %v, want %v", p, key, got, want)
		}
	}

	if !l.add(p, dual) || l.onlyPlain(p) || l.first(p) != dual {
		t.Fatalf("after adding the dual-stack key: first %q onlyPlain %v", l.first(p), l.onlyPlain(p))
	}
	if !l.add(p, plain) || l.add(p, plain) || l.add(p, dual) {
		t.Fatal("add reported a new key twice, or a known key as new")
	}
	l.add(p, dual2)
	if got := fmt.Sprint(l.keys(p)); got != fmt.Sprint([]string{plain, dual, dual2}) {
		t.Fatalf("keys = %s", got)
	}
	if len(l.other[p]) != 2 || len(l.plain) != 1 {
		t.Fatalf("plain key held in full: plain %v other %v", l.plain, l.other)
	}
	if !l.remove(p, plain) || l.remove(p, plain) || l.first(p) != dual {
		t.Fatalf("after removing the plain key: first %q", l.first(p))
	}
	l.remove(p, dual)
	l.remove(p, dual2)
	if l.first(p) != "" || len(l.other) != 0 || len(l.plain) != 0 || l.remove(p, dual) {
		t.Fatalf("not empty after removing every key: %v %v", l.plain, l.other)
	}
	// Not an IPv4 subnet (lease keys name none other): held in full.
	p6 := netip.MustParsePrefix("fd00::/64")
	k6 := prefix + "fd00::-64"
	if l.isPlain(p6, k6) || !l.add(p6, k6) || l.onlyPlain(p6) || l.first(p6) != k6 || !l.remove(p6, k6) {
		t.Fatalf("IPv6 subnet's key: keys %v", l.keys(p6))
	}
	l.add(p, plain)
	if !l.onlyPlain(p) || fmt.Sprint(l.keys(p)) != fmt.Sprint([]string{plain}) {
		t.Fatalf("plain key alone: onlyPlain %v keys %v", l.onlyPlain(p), l.keys(p))
	}
}
