// Package forwarding keeps Docker's iptables defaults from breaking or
// disguising overlay traffic (design.md §4 "Forwarding"):
//
//   - filter: a chain of ours (FilterChain), jumped first from DOCKER-USER
//     where it exists, else from FORWARD, accepting "-i <vxlan> -d <net>" and
//     "-o <vxlan> -s <net>" for every registered local network, so Docker's
//     FORWARD policy DROP lets overlay traffic through;
//   - nat: a chain of ours (NATChain), jumped first from POSTROUTING, with
//     "-s <net> -o <vxlan> -j ACCEPT", so Docker's MASQUERADE never rewrites
//     the source of traffic into the overlay. ACCEPT, not RETURN: RETURN only
//     returns to POSTROUTING, where MASQUERADE still matches.
//
// The controller has one key (Key): every reconcile converges both tables.
// It only ever changes its own chains and its own jumps. Docker rewrites its
// rules on network and container changes (inserting at the top), so the
// Docker watcher enqueues Key after such events, and a resync re-checks.
package forwarding

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name; Key its only key.
const (
	Name = "forwarding"
	Key  = "iptables"
)

// Our chains, and the chains they are jumped from.
const (
	FilterChain = "FLANNEL-REGISTRAR-FWD"
	NATChain    = "FLANNEL-REGISTRAR-NAT"
	DockerUser  = "DOCKER-USER"
	Forward     = "FORWARD"
	PostRouting = "POSTROUTING"
)

// DefaultVXLAN is flanneld's VXLAN device.
const DefaultVXLAN = "flannel.1"

// IPTables is what the controller needs of iptables (a fake implements it
// in unit tests). ListTable returns "iptables -t <table> -S": one consistent
// snapshot of a table per reconcile, instead of one exec per chain (and
// iptables-nft 1.8.9 reports a missing chain as "incompatible", which
// go-iptables does not recognise as "does not exist").
type IPTables interface {
	ListTable(table string) ([]string, error)
	NewChain(table, chain string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	ClearAndDeleteChain(table, chain string) error
}

// Options configure the controller. Every field is optional.
type Options struct {
	// VXLAN is the overlay device; default DefaultVXLAN.
	VXLAN string
	// IPTables runs the rules; nil: go-iptables for IPv4.
	IPTables IPTables
	// Filter keeps only the networks it returns true for (e.g. only those
	// registered without conflict); nil: every local network in the store.
	// With a Filter, KeysFor also reacts to network record changes.
	Filter func(state.LocalNetwork) bool
}

// Controller converges our iptables chains. Safe for concurrent use by one
// runner (the runner never reconciles one key twice at a time).
type Controller struct {
	store  *state.Store
	ipt    IPTables
	vxlan  string
	filter func(state.LocalNetwork) bool
	writes atomic.Uint64
}

// New returns the controller reading local networks from store.
func New(store *state.Store, o Options) (*Controller, error) {
	if o.VXLAN == "" {
		o.VXLAN = DefaultVXLAN
	}
	if o.IPTables == nil {
		ipt, err := NewIPTables()
		if err != nil {
			return nil, err
		}
		o.IPTables = ipt
	}
	return &Controller{store: store, ipt: o.IPTables, vxlan: o.VXLAN, filter: o.Filter}, nil
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// Keys implements reconcile.Controller: the one key is always wanted.
func (c *Controller) Keys(context.Context) ([]string, error) { return []string{Key}, nil }

// KeysFor maps a store change to our key: local networks always, network
// records only when a Filter may depend on them.
func (c *Controller) KeysFor(ev state.Event) []string {
	if ev.Kind == state.KindLocal || (ev.Kind == state.KindNetwork && c.filter != nil) {
		return []string{Key}
	}
	return nil
}

// Writes counts the iptables changes made so far (zero on a converged host).
func (c *Controller) Writes() uint64 { return c.writes.Load() }

// Reconcile converges the filter and nat tables for Key; other keys are
// ignored.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	if key != Key {
		return nil
	}
	nets := c.networks()
	return errors.Join(c.syncFilter(ctx, nets), c.syncNAT(ctx, nets))
}

func (c *Controller) networks() []state.LocalNetwork {
	all := c.store.LocalNetworks()
	if c.filter == nil {
		return all
	}
	return slices.DeleteFunc(all, func(n state.LocalNetwork) bool { return !c.filter(n) })
}

// FilterRules are the rules of FilterChain for nets, in order.
func FilterRules(vxlan string, nets []state.LocalNetwork) [][]string {
	out := make([][]string, 0, 2*len(nets))
	for _, n := range nets {
		out = append(out,
			[]string{"-d", n.Subnet.String(), "-i", vxlan, "-j", "ACCEPT"},
			[]string{"-s", n.Subnet.String(), "-o", vxlan, "-j", "ACCEPT"})
	}
	return out
}

// NATRules are the rules of NATChain for nets, in order.
func NATRules(vxlan string, nets []state.LocalNetwork) [][]string {
	out := make([][]string, 0, len(nets))
	for _, n := range nets {
		out = append(out, []string{"-s", n.Subnet.String(), "-o", vxlan, "-j", "ACCEPT"})
	}
	return out
}

func (c *Controller) syncFilter(ctx context.Context, nets []state.LocalNetwork) error {
	tab, err := c.table("filter")
	if err != nil {
		return err
	}
	if err := c.syncChain(ctx, tab, FilterChain, FilterRules(c.vxlan, nets)); err != nil {
		return err
	}
	// DOCKER-USER is Docker's place for user rules, evaluated before its own;
	// before Docker made it (or without Docker) FORWARD is.
	if !tab.has(DockerUser) {
		return c.jumpFirst(ctx, tab, Forward, FilterChain)
	}
	return errors.Join(
		c.jumpFirst(ctx, tab, DockerUser, FilterChain),
		c.removeJumps(ctx, tab, Forward, FilterChain)) // ours from before Docker started
}

func (c *Controller) syncNAT(ctx context.Context, nets []state.LocalNetwork) error {
	tab, err := c.table("nat")
	if err != nil {
		return err
	}
	if err := c.syncChain(ctx, tab, NATChain, NATRules(c.vxlan, nets)); err != nil {
		return err
	}
	return c.jumpFirst(ctx, tab, PostRouting, NATChain)
}

// table is a snapshot of one table: its chains and their rule specs (rule
// number i+1 is rules[chain][i]). Each step of a reconcile changes a
// different chain, so the numbers stay valid for the whole reconcile.
type table struct {
	name  string
	rules map[string][][]string // chain → rules; present for every chain
}

func (t *table) has(chain string) bool { _, ok := t.rules[chain]; return ok }

func (c *Controller) table(name string) (*table, error) {
	lines, err := c.ipt.ListTable(name)
	if err != nil {
		return nil, fmt.Errorf("iptables -t %s -S: %w", name, err)
	}
	return parseTable(name, lines), nil
}

// parseTable reads "iptables -S" output: "-P CHAIN POLICY", "-N CHAIN",
// "-A CHAIN spec…".
func parseTable(name string, lines []string) *table {
	t := &table{name: name, rules: map[string][][]string{}}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-P", "-N":
			if _, ok := t.rules[f[1]]; !ok {
				t.rules[f[1]] = nil
			}
		case "-A":
			t.rules[f[1]] = append(t.rules[f[1]], f[2:])
		}
	}
	return t
}

// syncChain makes chain (ours) hold exactly want, in any order: it creates
// the chain, appends what is missing, then deletes what is not wanted.
func (c *Controller) syncChain(ctx context.Context, tab *table, chain string, want [][]string) error {
	if !tab.has(chain) {
		if err := c.ipt.NewChain(tab.name, chain); err != nil {
			return fmt.Errorf("iptables -t %s -N %s: %w", tab.name, chain, err)
		}
		c.record(ctx, "iptables -t %s -N %s", tab.name, chain)
	}
	have := tab.rules[chain]
	keep := make([]bool, len(have))
	var errs []error
	for _, w := range want {
		if i := findRule(have, keep, w); i >= 0 {
			keep[i] = true
			continue
		}
		if err := c.ipt.Append(tab.name, chain, w...); err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -A %s %s: %w", tab.name, chain, strings.Join(w, " "), err))
			continue
		}
		c.record(ctx, "iptables -t %s -A %s %s", tab.name, chain, strings.Join(w, " "))
	}
	// Appends do not move earlier rules, so the listed numbers still hold;
	// delete from the bottom up to keep them valid.
	for i := len(have) - 1; i >= 0; i-- {
		if !keep[i] {
			errs = append(errs, c.deleteRule(ctx, tab.name, chain, i+1, have[i]))
		}
	}
	return errors.Join(errs...)
}

// jumpFirst makes "-j target" the first rule of parent, exactly once.
func (c *Controller) jumpFirst(ctx context.Context, tab *table, parent, target string) error {
	if !tab.has(parent) {
		return fmt.Errorf("iptables -t %s: no chain %s", tab.name, parent)
	}
	have := tab.rules[parent]
	at := jumpPositions(have, target)
	if len(at) == 1 && at[0] == 0 && len(have[0]) == 2 {
		return nil
	}
	// Insert before deleting: the jump is never missing in between.
	if err := c.ipt.Insert(tab.name, parent, 1, "-j", target); err != nil {
		return fmt.Errorf("iptables -t %s -I %s 1 -j %s: %w", tab.name, parent, target, err)
	}
	c.record(ctx, "iptables -t %s -I %s 1 -j %s", tab.name, parent, target)
	var errs []error
	for _, i := range slices.Backward(at) {
		// +1 for 1-based numbers, +1 for the rule just inserted.
		errs = append(errs, c.deleteRule(ctx, tab.name, parent, i+2, have[i]))
	}
	return errors.Join(errs...)
}

// removeJumps deletes every jump to target from parent.
func (c *Controller) removeJumps(ctx context.Context, tab *table, parent, target string) error {
	have := tab.rules[parent]
	var errs []error
	for _, i := range slices.Backward(jumpPositions(have, target)) {
		errs = append(errs, c.deleteRule(ctx, tab.name, parent, i+1, have[i]))
	}
	return errors.Join(errs...)
}

func (c *Controller) deleteRule(ctx context.Context, table, chain string, id int, spec []string) error {
	if err := c.ipt.DeleteById(table, chain, id); err != nil {
		return fmt.Errorf("iptables -t %s -D %s %d: %w", table, chain, id, err)
	}
	c.record(ctx, "iptables -t %s -D %s %s", table, chain, strings.Join(spec, " "))
	return nil
}

// Remove deletes our jumps and chains from both tables (for uninstall; a
// registrar that stops keeps them, so traffic keeps flowing meanwhile).
func (c *Controller) Remove(ctx context.Context) error {
	var errs []error
	for _, r := range []struct {
		table, chain string
		parents      []string
	}{
		{"filter", FilterChain, []string{DockerUser, Forward}},
		{"nat", NATChain, []string{PostRouting}},
	} {
		tab, err := c.table(r.table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range r.parents {
			errs = append(errs, c.removeJumps(ctx, tab, p, r.chain))
		}
		if !tab.has(r.chain) {
			continue
		}
		if err := c.ipt.ClearAndDeleteChain(r.table, r.chain); err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -X %s: %w", r.table, r.chain, err))
			continue
		}
		c.record(ctx, "iptables -t %s -X %s", r.table, r.chain)
	}
	return errors.Join(errs...)
}

func (c *Controller) record(ctx context.Context, format string, args ...any) {
	c.writes.Add(1)
	reconcile.Record(ctx, fmt.Sprintf(format, args...))
}

// jumpPositions returns the indexes of rules whose target is target.
func jumpPositions(have [][]string, target string) []int {
	var at []int
	for i, r := range have {
		if j := slices.Index(r, "-j"); j >= 0 && j+1 < len(r) && r[j+1] == target {
			at = append(at, i)
		}
	}
	return at
}

// findRule returns the index of the first rule in have, not yet kept, equal
// to want, or -1.
func findRule(have [][]string, keep []bool, want []string) int {
	k := ruleKey(want)
	for i, r := range have {
		if !keep[i] && ruleKey(r) == k {
			return i
		}
	}
	return -1
}

// ruleKey makes rules comparable whatever the order of their options
// (iptables -S prints them in its own order): options with their arguments,
// sorted. "! -o x" stays one option.
func ruleKey(spec []string) string {
	var opts []string
	var cur []string
	for _, tok := range spec {
		starts := tok == "!" || (strings.HasPrefix(tok, "-") && (len(cur) == 0 || cur[len(cur)-1] != "!"))
		if starts && len(cur) > 0 {
			opts = append(opts, strings.Join(cur, " "))
			cur = nil
		}
		cur = append(cur, tok)
	}
	if len(cur) > 0 {
		opts = append(opts, strings.Join(cur, " "))
	}
	slices.Sort(opts)
	return strings.Join(opts, "\x00")
}
