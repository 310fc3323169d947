// Package forwarding keeps Docker's iptables defaults from breaking or
// disguising overlay traffic (design.md §4 "Forwarding"), and enforces
// isolation groups (groups.go):
//
//   - filter: a chain of ours (FilterChain), jumped first from DOCKER-USER
//     where it exists, else from FORWARD, accepting "-i <vxlan> -d <net>" and
//     "-o <vxlan> -s <net>" for every registered local network, so Docker's
//     FORWARD policy DROP lets overlay traffic through; for a grouped
//     network, "-i <vxlan> -d <net>" only from its groups' ipsets;
//   - nat: a chain of ours (NATChain), jumped first from POSTROUTING, with
//     "-s <net> -o <vxlan> -j ACCEPT", so Docker's MASQUERADE never rewrites
//     the source of traffic into the overlay. ACCEPT, not RETURN: RETURN only
//     returns to POSTROUTING, where MASQUERADE still matches.
//
// The controller has one key (Key): every reconcile converges both tables.
// It only ever changes its own chains and its own jumps. Docker rewrites its
// rules on network and container changes (inserting at the top), so the
// Docker watcher enqueues Key after such events, and a resync re-checks.
//
// Rules are deleted by their spec, never by their number: the numbers come
// from a snapshot, and Docker may insert rules between the snapshot and the
// delete (e.g. "docker compose up" creating several networks), which would
// shift them onto one of Docker's rules. Moving our jump to the top is one
// atomic iptables-restore batch (delete every jump by spec, insert one first),
// so it is never missing and never duplicated in between.
package forwarding

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netns"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/overlay"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
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
//
// Delete removes the first rule equal to rulespec (iptables -D chain spec);
// Restore applies lines ("-D CHAIN spec", "-I CHAIN 1 spec", …) to table as
// one atomic batch (iptables-restore --noflush).
type IPTables interface {
	ListTable(table string) ([]string, error)
	NewChain(table, chain string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	ClearAndDeleteChain(table, chain string) error
	Restore(table string, lines []string) error
	// ListWithCounters is "iptables -t table -v -S chain" (rules with
	// "-c packets bytes"), for GroupDrops.
	ListWithCounters(table, chain string) ([]string, error)
}

// IPSets is what the controller needs of ipset: pkg/netlinkx's Handle
// (netlink, no ipset binary), or a fake in unit tests. Every verb is
// idempotent (create/add of what exists, del/destroy of what is gone: done).
type IPSets interface {
	IPSetNets(prefix string) (map[string][]netip.Prefix, error)
	IPSetCreateNet(name string) error
	IPSetAdd(name string, p netip.Prefix) error
	IPSetDel(name string, p netip.Prefix) error
	IPSetDestroy(name string) error
}

// Options configure the controller. Every field is optional.
type Options struct {
	// VXLAN is the overlay device; default DefaultVXLAN.
	VXLAN string
	// IPTables runs the rules; nil: go-iptables for IPv4.
	IPTables IPTables
	// IPSets keeps the group sets; nil: a netlink handle on the current
	// network namespace.
	IPSets IPSets
	// Host and PublicIP are this host's identity (PublicIP zero: the VXLAN
	// device's local address), to tell remote records from our own when
	// filling the group sets.
	Host     string
	PublicIP netip.Addr
	// Policy, when set, is the trust boundary a remote record must pass to
	// be a member of a group's set (as to be routed).
	Policy *policy.Policy
	// Filter keeps only the networks it returns true for (e.g. only those
	// registered without conflict); nil: every local network in the store.
	// With a Filter, KeysFor also reacts to network record changes.
	Filter func(state.LocalNetwork) bool
	// Hold, when set and active, defers removing members from the group
	// sets and destroying sets (see reconcile.Hold and keepMembers).
	Hold *reconcile.Hold
}

// Controller converges our iptables chains. Safe for concurrent use by one
// runner (the runner never reconciles one key twice at a time).
type Controller struct {
	store  *state.Store
	ipt    IPTables
	sets   IPSets
	vxlan  string
	host   string
	ip     netip.Addr
	filter func(state.LocalNetwork) bool
	policy *policy.Policy
	hold   *reconcile.Hold
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
	if o.IPSets == nil {
		h, err := netlinkx.Open(netns.None())
		if err != nil {
			return nil, fmt.Errorf("ipset netlink: %w", err)
		}
		o.IPSets = h
	}
	return &Controller{store: store, ipt: o.IPTables, sets: o.IPSets, vxlan: o.VXLAN, host: o.Host, ip: o.PublicIP, filter: o.Filter, policy: o.Policy, hold: o.Hold}, nil
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// Keys implements reconcile.Controller: the one key is always wanted.
func (c *Controller) Keys(context.Context) ([]string, error) { return []string{Key}, nil }

// KeysFor maps a store change to our key: local networks, network records
// and leases (they decide the group sets' members) and the VXLAN device
// (its address tells our records from others').
func (c *Controller) KeysFor(ev state.Event) []string {
	switch ev.Kind {
	case state.KindLocal, state.KindNetwork, state.KindLease, state.KindLink:
		return []string{Key}
	}
	return nil
}

// Writes counts the iptables changes made so far (zero on a converged host).
func (c *Controller) Writes() uint64 { return c.writes.Load() }

// Reconcile converges our ipsets and the filter and nat tables for Key;
// other keys are ignored.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	if key != Key {
		return nil
	}
	w := c.Want()
	have, lerr := c.sets.IPSetNets(SetPrefix)
	if lerr != nil && len(w.Sets) == 0 {
		// No group here (or a kernel without ipset): nothing to keep, and
		// the rules of ungrouped networks must not wait for ipset.
		have, lerr = nil, nil
	}
	// Sets before the rules that name them. A set that cannot be made fails
	// closed: its ACCEPT is refused, the network's DROP is not; other
	// networks' rules are unaffected. Stale sets go after the rules that
	// named them (a set in use cannot be destroyed).
	held := c.hold.Remaining()
	if held > 0 {
		w = keepMembers(w, have)
	}
	var serr error
	if lerr == nil {
		serr = c.syncSets(ctx, w, have)
	}
	ferr := c.syncFilter(ctx, w.Filter)
	nerr := c.syncNAT(ctx, w.NAT)
	if lerr != nil || ferr != nil {
		return errors.Join(lerr, serr, ferr, nerr)
	}
	if held > 0 {
		if err := errors.Join(serr, nerr); err != nil {
			return err
		}
		return reconcile.RequeueAfter(held, "keeping group set members while etcd's records are written again")
	}
	return errors.Join(serr, nerr, c.destroyStaleSets(ctx, w, have))
}

// Want derives the desired state from the store (see Derive).
func (c *Controller) Want() Want {
	// The trust boundary decides which remote records may join a group's
	// set, as it decides which are routed.
	self := overlay.SelfOf(c.host, c.ip, c.policy, c.store)
	var records []state.KeyedNetwork
	var leases []state.Lease
	local := c.networks()
	if slices.ContainsFunc(local, func(n state.LocalNetwork) bool { return len(n.Groups) > 0 }) {
		records, leases = c.store.Networks(), c.store.Leases()
	}
	return Derive(Snapshot{VXLAN: c.vxlan, Self: self, Local: local, Records: records, Leases: leases})
}

func (c *Controller) networks() []state.LocalNetwork {
	all := c.store.LocalNetworks()
	if c.filter == nil {
		return all
	}
	return slices.DeleteFunc(all, func(n state.LocalNetwork) bool { return !c.filter(n) })
}

// FilterRules are the rules of FilterChain for ungrouped nets, in order.
func FilterRules(vxlan string, nets []state.LocalNetwork) [][]string {
	var out [][]string
	for _, r := range Derive(Snapshot{VXLAN: vxlan, Local: nets}).Filter {
		out = append(out, r.Spec)
	}
	return out
}

// NATRules are the rules of NATChain for nets, in order.
func NATRules(vxlan string, nets []state.LocalNetwork) [][]string {
	return Derive(Snapshot{VXLAN: vxlan, Local: nets}).NAT
}

func (c *Controller) syncFilter(ctx context.Context, want []Rule) error {
	tab, err := c.table("filter")
	if err != nil {
		return err
	}
	if err := c.syncChain(ctx, tab, FilterChain, want); err != nil {
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

func (c *Controller) syncNAT(ctx context.Context, nat [][]string) error {
	tab, err := c.table("nat")
	if err != nil {
		return err
	}
	want := make([]Rule, len(nat))
	for i, r := range nat {
		want[i] = Rule{Spec: r}
	}
	if err := c.syncChain(ctx, tab, NATChain, want); err != nil {
		return err
	}
	return c.jumpFirst(ctx, tab, PostRouting, NATChain)
}

// table is a snapshot of one table: its chains and their rule specs, in
// order. Positions are only ever used to decide, never to delete: others
// (Docker) may change a chain right after the snapshot.
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
			t.rules[f[1]] = append(t.rules[f[1]], splitSpec(strings.TrimPrefix(l, "-A "+f[1]+" ")))
		}
	}
	return t
}

// syncChain makes chain (ours) hold exactly want. Order matters only
// between Early rules and Drop rules (every Early before every Drop): a
// missing Early rule is inserted first, a missing Drop (or one found above
// an Early rule) appended, any other missing rule appended; then what is not
// wanted is deleted. A converged chain gets no write.
func (c *Controller) syncChain(ctx context.Context, tab *table, chain string, want []Rule) error {
	if !tab.has(chain) {
		if err := c.ipt.NewChain(tab.name, chain); err != nil {
			return fmt.Errorf("iptables -t %s -N %s: %w", tab.name, chain, err)
		}
		c.record(ctx, "iptables -t %s -N %s", tab.name, chain)
	}
	have := tab.rules[chain]
	keep := make([]bool, len(have))
	idx := indexRules(have)
	at := make([]int, len(want)) // index in have, -1: missing
	lastEarly := -1
	for i, w := range want {
		at[i] = idx.take(w.Spec)
		if at[i] >= 0 {
			keep[at[i]] = true
			if w.Early {
				lastEarly = max(lastEarly, at[i])
			}
		}
	}
	var ops []chainOp
	add := func(w Rule) {
		if w.Early {
			ops = append(ops, chainOp{verb: "-I", spec: w.Spec})
		} else {
			ops = append(ops, chainOp{verb: "-A", spec: w.Spec})
		}
	}
	for i, w := range want {
		switch {
		case at[i] < 0:
			add(w)
		case w.Drop && at[i] < lastEarly:
			// Above an ACCEPT it must follow: append a copy, then the delete
			// by spec below removes the first equal rule, this one.
			keep[at[i]] = false
			add(w)
		}
	}
	// A delete by spec removes the first equal rule; take keeps the last of
	// equal ones, so what survives is exactly what was kept.
	for i, r := range have {
		if !keep[i] {
			ops = append(ops, chainOp{verb: "-D", spec: r})
		}
	}
	return c.apply(ctx, tab.name, chain, ops)
}

// chainOp is one change of a chain of ours: "-I" (at the top), "-A" or
// "-D" (by spec).
type chainOp struct {
	verb string
	spec []string
}

func (o chainOp) line(chain string) string {
	if o.verb == "-I" {
		return "-I " + chain + " 1 " + joinSpec(o.spec)
	}
	return o.verb + " " + chain + " " + joinSpec(o.spec)
}

// apply makes ops in one iptables-restore batch: one exec instead of one
// per rule (1,000 networks in 20 groups: seconds otherwise), and the chain
// changes at once, never half done. If the batch is refused, each op is
// tried alone, so that one bad rule does not hold back the others and the
// error names it.
func (c *Controller) apply(ctx context.Context, table, chain string, ops []chainOp) error {
	if len(ops) == 0 {
		return nil
	}
	lines := make([]string, len(ops))
	for i, o := range ops {
		lines[i] = o.line(chain)
	}
	if err := c.ipt.Restore(table, lines); err == nil {
		for _, l := range lines {
			c.record(ctx, "iptables -t %s %s", table, l)
		}
		return nil
	}
	var errs []error
	for i, o := range ops {
		var err error
		switch o.verb {
		case "-I":
			err = c.ipt.Insert(table, chain, 1, o.spec...)
		case "-A":
			err = c.ipt.Append(table, chain, o.spec...)
		default:
			err = c.ipt.Delete(table, chain, o.spec...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s %s: %w", table, lines[i], err))
			continue
		}
		c.record(ctx, "iptables -t %s %s", table, lines[i])
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
	// One atomic batch: every jump of ours deleted by its spec, one inserted
	// first. Whatever Docker inserted since the snapshot stays untouched, and
	// the jump is never missing in between.
	lines := make([]string, 0, len(at)+1)
	for _, i := range at {
		lines = append(lines, "-D "+parent+" "+joinSpec(have[i]))
	}
	lines = append(lines, "-I "+parent+" 1 -j "+target)
	if err := c.ipt.Restore(tab.name, lines); err != nil {
		return fmt.Errorf("iptables-restore -t %s %q: %w", tab.name, lines, err)
	}
	for _, l := range lines {
		c.record(ctx, "iptables -t %s %s", tab.name, l)
	}
	return nil
}

// removeJumps deletes every jump to target from parent.
func (c *Controller) removeJumps(ctx context.Context, tab *table, parent, target string) error {
	have := tab.rules[parent]
	var errs []error
	for _, i := range jumpPositions(have, target) {
		errs = append(errs, c.deleteRule(ctx, tab.name, parent, have[i]))
	}
	return errors.Join(errs...)
}

// deleteRule deletes one rule equal to spec (by spec: see the package doc).
func (c *Controller) deleteRule(ctx context.Context, table, chain string, spec []string) error {
	if err := c.ipt.Delete(table, chain, spec...); err != nil {
		return fmt.Errorf("iptables -t %s -D %s %s: %w", table, chain, joinSpec(spec), err)
	}
	c.record(ctx, "iptables -t %s -D %s %s", table, chain, joinSpec(spec))
	return nil
}

// Remove deletes our jumps and chains from both tables, then our ipsets (for uninstall; a
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
	if err := errors.Join(errs...); err != nil {
		return err // the rules may still name our sets
	}
	have, err := c.sets.IPSetNets(SetPrefix)
	if err != nil {
		return err
	}
	return c.destroyStaleSets(ctx, Want{}, have)
}

func (c *Controller) record(ctx context.Context, format string, args ...any) {
	c.writes.Add(1)
	reconcile.Record(ctx, fmt.Sprintf(format, args...))
}
