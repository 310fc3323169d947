package forwarding

// This file: a cheap fingerprint of what is ours in the filter and nat
// tables, for the firewall watcher's polling mode (iptables-legacy, whose
// changes the kernel does not announce).

import (
	"fmt"
	"strings"
)

// Fingerprint lists both tables (one "iptables -S" each) and returns a
// text that changes whenever our jumps move or vanish, DOCKER-USER appears,
// or our chains' rules change; Docker's rules elsewhere do not change it.
func (c *Controller) Fingerprint() (string, error) {
	var b strings.Builder
	for _, t := range []struct {
		table, chain string
		parents      []string
	}{
		{"filter", FilterChain, []string{DockerUser, Forward}},
		{"nat", NATChain, []string{PostRouting}},
	} {
		tab, err := c.table(t.table)
		if err != nil {
			return "", err
		}
		for _, p := range t.parents {
			fmt.Fprintf(&b, "%s/%s present=%t jumps=%v\n", t.table, p, tab.has(p), jumpPositions(tab.rules[p], t.chain))
		}
		fmt.Fprintf(&b, "%s/%s present=%t\n", t.table, t.chain, tab.has(t.chain))
		for _, r := range tab.rules[t.chain] {
			b.WriteString(joinSpec(r) + "\n")
		}
	}
	return b.String(), nil
}
