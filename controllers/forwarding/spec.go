package forwarding

// This file: rule specs, their keys and positions.

import (
	"slices"
	"strings"
)

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

// ruleIndex finds rules of a chain by their ruleKey in O(1).
type ruleIndex map[string][]int

func indexRules(have [][]string) ruleIndex {
	idx := make(ruleIndex, len(have))
	for i, r := range have {
		k := ruleKey(r)
		idx[k] = append(idx[k], i)
	}
	return idx
}

// take returns the index of the last rule equal to want not taken yet, or
// -1. The last, because deletes by spec remove the first equal rules: the
// kept ones must be those left over.
func (idx ruleIndex) take(want []string) int {
	k := ruleKey(want)
	at := idx[k]
	if len(at) == 0 {
		return -1
	}
	idx[k] = at[:len(at)-1]
	return at[len(at)-1]
}

// splitSpec splits a rule spec as "iptables -S" prints it into arguments:
// fields, with double-quoted ones (comments) unquoted.
func splitSpec(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, started := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case inQuote && ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			inQuote, started = !inQuote, true
		case !inQuote && (ch == ' ' || ch == '\t'):
			if started {
				out = append(out, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteByte(ch)
			started = true
		}
	}
	if started {
		out = append(out, cur.String())
	}
	return out
}

// joinSpec renders spec for iptables-restore and logs, quoting arguments
// with spaces or quotes as "iptables -S" does.
func joinSpec(spec []string) string {
	out := make([]string, len(spec))
	for i, a := range spec {
		if a == "" || strings.ContainsAny(a, " \t\"\\") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
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
