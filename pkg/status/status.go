// Package status renders the cluster as etcd holds it, for
// `flannel-registrar status`: a table for people (aligned columns, at most
// 100 columns wide) and JSON for scripts. The command gathers the Report
// (cmd/flannel-registrar/app); this package only shapes and prints it, so
// the output is tested with golden files.
package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything status prints.
type Report struct {
	Host        string        `json:"host"` // the host status runs on
	Generated   time.Time     `json:"generated"`
	Hosts       []Host        `json:"hosts"`
	Networks    []Network     `json:"networks"`
	Conflicts   []Conflict    `json:"conflicts"`
	Quarantined []Quarantined `json:"quarantined"`
	Leftovers   []Leftover    `json:"leftovers"`
	Local       Local         `json:"local"`
}

// Host is one host of the cluster.
type Host struct {
	Name     string `json:"name"`
	PublicIP string `json:"public_ip"`
	VtepMAC  string `json:"vtep_mac"`
	Version  string `json:"version"` // "" for a flanneld-only host
	// Alive says whether its registrar's liveness lease is current (its host
	// record exists); a host known only from records or leases is stale.
	Alive    bool     `json:"alive"`
	Networks []string `json:"networks"`
	// Reach is "reachable", "unreachable", "self", or "unknown" (not probed
	// from here yet, or this host's daemon is not running).
	Reach     string  `json:"reach"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Recovery is the host's recovery summary from its own status entry,
	// e.g. "restart=1" ("" when none or off).
	Recovery string `json:"recovery,omitempty"`
}

// Network states.
const (
	StateRouted   = "routed" // remote, routed from here
	StateLocal    = "local"  // this host's own network
	StateConflict = "conflict"
	StateRefused  = "refused" // by the trust policy; Detail names the rule
)

// Network is one registered network.
type Network struct {
	Host   string `json:"host"`
	Name   string `json:"name"`
	Subnet string `json:"subnet"`
	Group  string `json:"group,omitempty"`
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// Conflict is a subnet with claims that cannot all be honoured.
type Conflict struct {
	Subnet    string   `json:"subnet"`
	Reason    string   `json:"reason"`
	Claimants []string `json:"claimants"`
}

// Quarantined is a value moved under _quarantine/.
type Quarantined struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Leftover is a key the original tool left.
type Leftover struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	Host string `json:"host,omitempty"`
}

// Local is this host's desired versus programmed state.
type Local struct {
	VXLAN    string   `json:"vxlan"` // e.g. "flannel.1 mac … local …", or "missing"
	Desired  int      `json:"desired_subnets"`
	InSync   bool     `json:"in_sync"`
	Diffs    []string `json:"diffs,omitempty"`
	Recovery string   `json:"recovery,omitempty"`
}

// JSON writes r as indented JSON.
func JSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write status JSON: %w", err)
	}
	return nil
}

// Width is the widest line Table prints.
const Width = 100

// Table writes r for people: one aligned section per kind, each line cut to
// Width columns.
func Table(w io.Writer, r Report) error {
	var b strings.Builder
	section := func(title string, header string, rows [][]string) {
		fmt.Fprintf(&b, "%s\n", title)
		if len(rows) == 0 {
			b.WriteString("  none\n\n")
			return
		}
		var sb strings.Builder
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		_, _ = fmt.Fprintf(tw, "  %s\n", header)
		for _, row := range rows {
			_, _ = fmt.Fprintf(tw, "  %s\n", strings.Join(row, "\t"))
		}
		_ = tw.Flush() // writes to a strings.Builder cannot fail
		for line := range strings.SplitSeq(strings.TrimRight(sb.String(), "\n"), "\n") {
			b.WriteString(cut(strings.TrimRight(line, " "), Width))
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "cluster as seen from %s at %s\n\n", r.Host, r.Generated.UTC().Format(time.RFC3339))

	var hosts, recov [][]string
	for _, h := range r.Hosts {
		alive := "stale"
		if h.Alive {
			alive = "alive"
		}
		hosts = append(hosts, []string{cut(h.Name, 16), dash(h.PublicIP), dash(h.VtepMAC), cut(dash(h.Version), 8),
			alive, fmt.Sprint(len(h.Networks)), h.Reach})
		if h.Recovery != "" {
			recov = append(recov, []string{cut(h.Name, 16), h.Recovery})
		}
	}
	section(fmt.Sprintf("HOSTS (%d)", len(r.Hosts)), "HOST\tPUBLIC IP\tVTEP MAC\tVERSION\tLEASE\tNETS\tFROM HERE", hosts)
	if len(recov) > 0 {
		section("RECOVERY ACTIONS", "HOST\tACTIONS", recov)
	}

	var nets [][]string
	for _, n := range r.Networks {
		state := n.State
		if n.Detail != "" {
			state += ": " + n.Detail
		}
		nets = append(nets, []string{cut(n.Host, 16), cut(n.Name, 20), n.Subnet, dash(cut(n.Group, 12)), state})
	}
	section(fmt.Sprintf("NETWORKS (%d)", len(r.Networks)), "HOST\tNETWORK\tSUBNET\tGROUP\tSTATE", nets)

	var cs [][]string
	for _, c := range r.Conflicts {
		cs = append(cs, []string{c.Subnet, strings.Join(c.Claimants, " vs "), c.Reason})
	}
	section(fmt.Sprintf("CONFLICTS (%d)", len(r.Conflicts)), "SUBNET\tCLAIMANTS\tREASON", cs)

	var qs [][]string
	for _, q := range r.Quarantined {
		qs = append(qs, []string{q.Key, q.Value})
	}
	section(fmt.Sprintf("QUARANTINED (%d)", len(r.Quarantined)), "KEY\tVALUE", qs)

	var ls [][]string
	for _, l := range r.Leftovers {
		ls = append(ls, []string{l.Kind, dash(l.Host), l.Key})
	}
	section(fmt.Sprintf("ORIGINAL TOOL'S KEYS (%d)", len(r.Leftovers)), "KIND\tHOST\tKEY", ls)

	fmt.Fprintf(&b, "THIS HOST (%s)\n", r.Host)
	fmt.Fprintf(&b, "  vxlan     %s\n", cut(r.Local.VXLAN, Width-12))
	sync := "in sync"
	if !r.Local.InSync {
		sync = fmt.Sprintf("%d differences", len(r.Local.Diffs))
	}
	fmt.Fprintf(&b, "  kernel    %d remote subnets wanted, %s\n", r.Local.Desired, sync)
	for _, d := range r.Local.Diffs {
		b.WriteString(cut("    "+d, Width))
		b.WriteByte('\n')
	}
	if r.Local.Recovery != "" {
		fmt.Fprintf(&b, "  recovery  %s\n", cut(r.Local.Recovery, Width-12))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cut shortens s to n columns, marking the cut with "…".
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
