package firewall

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

func rule(verb uint16, family uint8, table, chain string) netlinkx.NFTEvent {
	return netlinkx.NFTEvent{Type: verb, Family: family, Table: table, Chain: chain}
}

func gen(pid uint32) netlinkx.NFTEvent {
	return netlinkx.NFTEvent{Type: unix.NFT_MSG_NEWGEN, Gen: true, PID: pid, Comm: "iptables"}
}

// Each transaction is reported once per watched table it touched, when it
// ends; our own transactions, other families' and other tables' are not.
func TestTransactions(t *testing.T) {
	var got []Change
	w := New(Options{Poll: true, OnChange: func(c Change) { got = append(got, c) }, Own: func(pid uint32) bool { return pid == 7 }})
	var tx transaction
	for _, e := range []netlinkx.NFTEvent{
		// Docker-like: many rules in two tables, one transaction.
		rule(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, "filter", "FORWARD"),
		rule(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, "filter", "DOCKER"),
		rule(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, "nat", "POSTROUTING"),
		gen(100),
		// Ours: dropped.
		rule(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, "filter", "DOCKER-USER"),
		gen(7),
		// IPv6 and an unwatched table: nothing.
		rule(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV6, "filter", "FORWARD"),
		rule(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, "mangle", "PREROUTING"),
		gen(101),
		// A transaction that changed nothing: nothing.
		gen(102),
		// A message naming no table might be one of ours.
		rule(unix.NFT_MSG_DELCHAIN, unix.NFPROTO_IPV4, "", ""),
		gen(103),
	} {
		w.onEvent(&tx, e)
	}
	want := []Change{
		{Table: "filter", Trigger: "firewall:rule-new filter/FORWARD by iptables[100]"},
		{Table: "nat", Trigger: "firewall:rule-del nat/POSTROUTING by iptables[100]"},
		{Table: "", Trigger: "firewall:chain-del by iptables[103]"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("reported\n %q\nwant\n %q", got, want)
	}
	if st := w.Stats(); st.Echoes != 1 || st.Reported != 3 {
		t.Errorf("stats %+v: want 1 echo, 3 reported", st)
	}
}
