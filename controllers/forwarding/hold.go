package forwarding

import (
	"maps"
	"net/netip"
	"slices"
)

// keepMembers returns w with every current member of its sets kept (have:
// the sets as they are), for while Options.Hold defers deletions: after
// etcd lost its data, the remote records that made them members are
// written again within seconds, and removing them meanwhile would drop the
// group's traffic.
func keepMembers(w Want, have map[string][]netip.Prefix) Want {
	sets := maps.Clone(w.Sets)
	for name, want := range sets {
		merged := append(slices.Clone(want), have[name]...)
		slices.SortFunc(merged, comparePrefix)
		sets[name] = slices.Compact(merged)
	}
	w.Sets = sets
	return w
}
