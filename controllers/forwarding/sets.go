package forwarding

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
)

// syncSets creates the wanted sets and makes their members exactly the
// wanted ones, one add or del per difference (never a flush or a swap: a
// converged set gets no write, and a changed one never lacks a member that
// stays).
// have is the current content of our sets.
func (c *Controller) syncSets(ctx context.Context, w Want, have map[string][]netip.Prefix) error {
	var errs []error
	for _, name := range sortedKeys(w.Sets) {
		cur, ok := have[name]
		if !ok {
			if err := c.sets.IPSetCreateNet(name); err != nil {
				errs = append(errs, err)
				continue
			}
			c.record(ctx, "ipset create %s hash:net (group %s)", name, w.GroupOf[name])
		}
		want := w.Sets[name]
		for _, p := range want {
			if _, found := slices.BinarySearchFunc(cur, p, comparePrefix); found {
				continue
			}
			if err := c.sets.IPSetAdd(name, p); err != nil {
				errs = append(errs, err)
				continue
			}
			c.record(ctx, "ipset add %s %s", name, p)
		}
		for _, p := range cur {
			if _, found := slices.BinarySearchFunc(want, p, comparePrefix); found {
				continue
			}
			if err := c.sets.IPSetDel(name, p); err != nil {
				errs = append(errs, err)
				continue
			}
			c.record(ctx, "ipset del %s %s", name, p)
		}
	}
	return errors.Join(errs...)
}

// destroyStaleSets destroys our sets (SetPrefix, listed in have) that w
// does not want.
func (c *Controller) destroyStaleSets(ctx context.Context, w Want, have map[string][]netip.Prefix) error {
	var errs []error
	for _, name := range sortedKeys(have) {
		if _, ok := w.Sets[name]; ok {
			continue
		}
		if err := c.sets.IPSetDestroy(name); err != nil {
			errs = append(errs, err)
			continue
		}
		c.record(ctx, "ipset destroy %s", name)
	}
	return errors.Join(errs...)
}

// Counter is a packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

// GroupDrops reads, on demand, how much traffic our DROP rules stopped on
// its way into each group: the counters of each grouped local network's
// DROP, added to each of that network's groups. For metrics and status; it
// runs one "iptables -S -v" and writes nothing.
func (c *Controller) GroupDrops() (map[string]Counter, error) {
	lines, err := c.ipt.ListWithCounters("filter", FilterChain)
	if err != nil {
		return nil, fmt.Errorf("iptables -t filter -v -S %s: %w", FilterChain, err)
	}
	groupsOf := map[string][]string{}
	for _, n := range c.networks() {
		groupsOf[n.Subnet.String()] = n.Groups
	}
	out := map[string]Counter{}
	for _, n := range c.networks() {
		for _, g := range n.Groups {
			out[g] = Counter{}
		}
	}
	for _, l := range lines {
		spec := splitSpec(l)
		if len(spec) < 2 || spec[0] != "-A" || !slices.Equal(spec[len(spec)-2:], []string{"-j", "DROP"}) {
			continue
		}
		var dst string
		var cnt Counter
		for i := 2; i+1 < len(spec); i++ {
			switch spec[i] {
			case "-d":
				dst = spec[i+1]
			case "-c":
				if i+2 < len(spec) {
					cnt.Packets, _ = strconv.ParseUint(spec[i+1], 10, 64)
					cnt.Bytes, _ = strconv.ParseUint(spec[i+2], 10, 64)
				}
			}
		}
		for _, g := range groupsOf[dst] {
			sum := out[g]
			sum.Packets += cnt.Packets
			sum.Bytes += cnt.Bytes
			out[g] = sum
		}
	}
	return out, nil
}

// GroupMembers returns the wanted members of each group set by group name
// (for diagnose and status).
func (w Want) GroupMembers() map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for name, ps := range w.Sets {
		out[w.GroupOf[name]] = ps
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// comparePrefix orders prefixes as IPSetNets returns them (address, then
// length).
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
