package forwarding

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// fakeIPT is an in-memory iptables: tables of chains of rule specs. It
// prints rules with their options in another order than they were given,
// as iptables -S does.
type fakeIPT struct {
	tables   map[string]map[string][][]string
	user     map[string][]string // user chains per table, in creation order
	writes   int
	counters map[string][2]uint64 // packets, bytes by rule text (ListWithCounters)
	// refuse makes Restore fail when a line contains it (as iptables-restore
	// refuses a whole batch for one bad line).
	refuse string
}

var builtin = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

func newFake() *fakeIPT {
	f := &fakeIPT{tables: map[string]map[string][][]string{}, user: map[string][]string{}}
	for t, chains := range builtin {
		f.tables[t] = map[string][][]string{}
		for _, c := range chains {
			f.tables[t][c] = nil
		}
	}
	return f
}

func (f *fakeIPT) chain(table, chain string) ([][]string, error) {
	rules, ok := f.tables[table][chain]
	if !ok {
		return nil, fmt.Errorf("chain %s in table %s is incompatible", chain, table)
	}
	return rules, nil
}

func (f *fakeIPT) ListTable(table string) ([]string, error) {
	var out []string
	for _, c := range builtin[table] {
		out = append(out, "-P "+c+" ACCEPT")
	}
	for _, c := range f.user[table] {
		out = append(out, "-N "+c)
	}
	for _, c := range append(slices.Clone(builtin[table]), f.user[table]...) {
		for _, r := range f.tables[table][c] {
			out = append(out, "-A "+c+" "+strings.Join(reorder(r), " "))
		}
	}
	return out, nil
}

// reorder prints options in reverse order, the target last.
func reorder(spec []string) []string {
	var groups [][]string
	for _, tok := range spec {
		if strings.HasPrefix(tok, "-") || tok == "!" {
			if len(groups) > 0 && len(groups[len(groups)-1]) == 1 && groups[len(groups)-1][0] == "!" {
				groups[len(groups)-1] = append(groups[len(groups)-1], tok)
				continue
			}
			groups = append(groups, []string{tok})
			continue
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], tok)
	}
	var target []string
	var out []string
	for _, g := range slices.Backward(groups) {
		if g[0] == "-j" {
			target = g
			continue
		}
		out = append(out, g...)
	}
	return append(out, target...)
}

func (f *fakeIPT) NewChain(table, chain string) error {
	if _, ok := f.tables[table][chain]; ok {
		return fmt.Errorf("chain %s exists", chain)
	}
	f.writes++
	f.tables[table][chain] = nil
	f.user[table] = append(f.user[table], chain)
	return nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("index of insertion too big")
	}
	f.writes++
	f.tables[table][chain] = slices.Insert(rules, pos-1, slices.Clone(spec))
	return nil
}

func (f *fakeIPT) Append(table, chain string, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	f.writes++
	f.tables[table][chain] = append(rules, slices.Clone(spec))
	return nil
}

// DeleteById is for tests that mess with the tables (the controller
// deletes by spec only).
func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if id < 1 || id > len(rules) {
		return fmt.Errorf("index of deletion too big")
	}
	f.writes++
	f.tables[table][chain] = slices.Delete(rules, id-1, id)
	return nil
}

// Delete removes the first rule equal to spec (options in any order, as
// iptables compares rules, not texts).
func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	k := ruleKey(spec)
	for i, r := range rules {
		if ruleKey(r) == k {
			f.writes++
			f.tables[table][chain] = slices.Delete(rules, i, i+1)
			return nil
		}
	}
	return fmt.Errorf("bad rule (does a matching rule exist in that chain?)")
}

// Restore applies "-D CHAIN spec" and "-I CHAIN N spec" lines all or
// nothing, like iptables-restore --noflush.
func (f *fakeIPT) Restore(table string, lines []string) error {
	for _, l := range lines {
		if f.refuse != "" && strings.Contains(l, f.refuse) {
			return fmt.Errorf("line %q: refused", l)
		}
	}
	saved := map[string][][]string{}
	for c, r := range f.tables[table] {
		saved[c] = slices.Clone(r)
	}
	writes := f.writes
	for _, l := range lines {
		a := splitSpec(l)
		var err error
		switch {
		case len(a) >= 2 && a[0] == "-D":
			err = f.Delete(table, a[1], a[2:]...)
		case len(a) >= 2 && a[0] == "-A":
			err = f.Append(table, a[1], a[2:]...)
		case len(a) >= 3 && a[0] == "-I":
			pos := 0
			if _, err = fmt.Sscan(a[2], &pos); err == nil {
				err = f.Insert(table, a[1], pos, a[3:]...)
			}
		default:
			err = fmt.Errorf("fake restore: cannot apply %q", l)
		}
		if err != nil {
			f.tables[table], f.writes = saved, writes
			return fmt.Errorf("line %q: %w", l, err)
		}
	}
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	if _, err := f.chain(table, chain); err != nil {
		return err
	}
	f.writes++
	delete(f.tables[table], chain)
	f.user[table] = slices.DeleteFunc(f.user[table], func(c string) bool { return c == chain })
	return nil
}

// dump prints one chain as "spec; spec; …" with the given specs' order.
func (f *fakeIPT) dump(table, chain string) string {
	rules, ok := f.tables[table][chain]
	if !ok {
		return "<absent>"
	}
	var s []string
	for _, r := range rules {
		s = append(s, strings.Join(r, " "))
	}
	return strings.Join(s, "; ")
}

// set returns the rules of a chain as a sorted set of canonical keys.
func (f *fakeIPT) set(table, chain string) []string {
	var out []string
	for _, r := range f.tables[table][chain] {
		out = append(out, strings.Join(r, " "))
	}
	slices.Sort(out)
	return out
}

// ListWithCounters prints one chain as "iptables -v -S" does, with the
// counters set in f.counters (by rule text), else zero.
func (f *fakeIPT) ListWithCounters(table, chain string) ([]string, error) {
	rules, err := f.chain(table, chain)
	if err != nil {
		return nil, err
	}
	out := []string{"-N " + chain + " -c 0 0"}
	for _, r := range rules {
		c := f.counters[strings.Join(r, " ")]
		spec := reorder(r)
		// -c comes before the target, as iptables prints it.
		out = append(out, "-A "+chain+" "+strings.Join(spec[:len(spec)-2], " ")+fmt.Sprintf(" -c %d %d ", c[0], c[1])+strings.Join(spec[len(spec)-2:], " "))
	}
	return out, nil
}

// fakeSets is an in-memory ipset.
type fakeSets struct {
	sets   map[string][]netip.Prefix
	inUse  func(name string) bool // nil: never
	writes int
}

func newFakeSets() *fakeSets { return &fakeSets{sets: map[string][]netip.Prefix{}} }

func (f *fakeSets) IPSetNets(prefix string) (map[string][]netip.Prefix, error) {
	out := map[string][]netip.Prefix{}
	for n, ps := range f.sets {
		if strings.HasPrefix(n, prefix) {
			c := slices.Clone(ps)
			slices.SortFunc(c, comparePrefix)
			out[n] = c
		}
	}
	return out, nil
}

func (f *fakeSets) IPSetCreateNet(name string) error {
	if len(name) > 31 {
		return fmt.Errorf("ipset name %q too long", name)
	}
	if _, ok := f.sets[name]; !ok {
		f.sets[name] = nil
	}
	f.writes++
	return nil
}

func (f *fakeSets) IPSetAdd(name string, p netip.Prefix) error {
	ps, ok := f.sets[name]
	if !ok {
		return fmt.Errorf("no set %s", name)
	}
	f.writes++
	if !slices.Contains(ps, p) {
		f.sets[name] = append(ps, p)
	}
	return nil
}

func (f *fakeSets) IPSetDel(name string, p netip.Prefix) error {
	f.writes++
	f.sets[name] = slices.DeleteFunc(f.sets[name], func(q netip.Prefix) bool { return q == p })
	return nil
}

func (f *fakeSets) IPSetDestroy(name string) error {
	if f.inUse != nil && f.inUse(name) {
		return fmt.Errorf("ipset destroy %s: in use", name)
	}
	f.writes++
	delete(f.sets, name)
	return nil
}
