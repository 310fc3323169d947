package netlinkx_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// The ipset verbs in a namespace: idempotent, listing only hash:net sets
// with the prefix, in full even when the kernel splits a big set over
// several messages, and a set in use cannot be destroyed.
func TestIPSets(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "ipset")
	ns := testutil.NewNetns(t, "frdp-nlx")
	h := netlinkxtest.Handle(t, ns)
	ns.Run(t, "ipset", "create", "FR-G-other-type", "hash:ip")
	ns.Run(t, "ipset", "create", "NOT-OURS", "hash:net")
	ns.Run(t, "ipset", "add", "NOT-OURS", "10.9.0.0/16")

	for range 2 {
		if err := h.IPSetCreateNet("FR-G-a"); err != nil {
			t.Fatal(err)
		}
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.18.0.7/32")}
	for i := range 2000 { // more than one netlink message
		want = append(want, netip.MustParsePrefix(fmt.Sprintf("198.18.%d.%d/30", 1+i/64, (i%64)*4)))
	}
	for _, p := range want {
		if err := h.IPSetAdd("FR-G-a", p); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.IPSetAdd("FR-G-a", want[5]); err != nil {
		t.Errorf("add again: %v", err)
	}
	got, err := h.IPSetNets("FR-G-")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got["FR-G-a"]) != len(want) {
		t.Fatalf("IPSetNets: %d sets, %d members (want 1, %d)", len(got), len(got["FR-G-a"]), len(want))
	}
	if got["FR-G-a"][0] != netip.MustParsePrefix("198.18.0.7/32") || got["FR-G-a"][1] != want[1] {
		t.Errorf("members not sorted or wrong: %v", got["FR-G-a"][:3])
	}
	for range 2 {
		if err := h.IPSetDel("FR-G-a", want[0]); err != nil {
			t.Errorf("del: %v", err)
		}
	}
	if err := h.IPSetDel("FR-G-absent", want[0]); err != nil {
		t.Errorf("del from an absent set: %v", err)
	}
	if out := ns.Run(t, "ipset", "list", "FR-G-a"); strings.Contains(out, "198.18.0.7\n") {
		t.Errorf("deleted member still listed")
	}

	ns.Run(t, "iptables", "-A", "FORWARD", "-m", "set", "--match-set", "FR-G-a", "src", "-j", "ACCEPT")
	if err := h.IPSetDestroy("FR-G-a"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("destroy of a set in use: %v", err)
	}
	ns.Run(t, "iptables", "-D", "FORWARD", "-m", "set", "--match-set", "FR-G-a", "src", "-j", "ACCEPT")
	for range 2 {
		if err := h.IPSetDestroy("FR-G-a"); err != nil {
			t.Errorf("destroy: %v", err)
		}
	}
	got, err = h.IPSetNets("FR-G-")
	if err != nil || !reflect.DeepEqual(got, map[string][]netip.Prefix{}) {
		t.Errorf("after destroy: %v, %v", got, err)
	}
	if out := ns.Run(t, "ipset", "list", "-n"); !strings.Contains(out, "NOT-OURS") || !strings.Contains(out, "FR-G-other-type") {
		t.Errorf("other sets touched: %s", out)
	}
}
