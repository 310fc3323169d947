package subnets_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// The publishing side of the trust boundary, on real etcd: a local Docker
// network the policy refuses (over the underlay, too wide, outside the
// allowed ranges) is never published, is reported once, and a registered
// network that becomes refused is withdrawn.
func TestPublishOnlyWhatPolicyAllows(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	store.SetLink(link(), "test")
	var mu sync.Mutex
	reports := map[string][]string{}
	withPolicy := func(o *subnets.Options) {
		// Everything allowed but the hard rules: the underlay rule decides.
		o.Policy = &policy.Policy{Allowed: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}
		o.OnRefused = func(network string, r *policy.Refusal) {
			mu.Lock()
			defer mu.Unlock()
			rule := "cleared"
			if r != nil {
				rule = r.Rule
			}
			reports[network] = append(reports[network], rule)
		}
	}
	d := startDaemon(t, srv, "h1", store, withPolicy)
	store.PutLocal(local("good", "198.19.1.0/24"), "test")
	store.PutLocal(local("underlay", "198.51.100.0/25"), "test")
	store.PutLocal(local("everything", "0.0.0.0/0"), "test")
	store.PutLocal(local("wide", "10.0.0.0/8"), "test")
	store.PutLocal(local("later", "198.19.7.0/24"), "test")
	store.PutLocal(local("metadata", "169.254.0.0/16"), "test")
	// Nothing is published before the underlay is known.
	time.Sleep(200 * time.Millisecond) //nolint:forbidigo // a window in which nothing may happen
	if v := value(t, cli, keys.Network("h1", "good")); v != "" {
		t.Fatalf("published before the underlay was observed: %s", v)
	}
	store.SetUnderlay(state.Underlay{Underlay: policy.Underlay{
		Addrs:  []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24")},
		Routes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
	}}, "test")
	waitValue(t, cli, keys.Network("h1", "good"), true)
	waitValue(t, cli, keys.Network("h1", "later"), true)
	want := map[string]string{"underlay": policy.RuleUnderlay, "everything": policy.RuleReserved, "wide": policy.RulePrefixLen, "metadata": policy.RuleReserved}
	testutil.Eventually(t, 5*time.Second, func() error {
		got := d.ctrl.Refused()
		for name, rule := range want {
			if got[name].Rule != rule {
				return fmt.Errorf("refused %v, want %s refused by %s", got, name, rule)
			}
		}
		return nil
	})
	for name := range want {
		if v := value(t, cli, keys.Network("h1", name)); v != "" {
			t.Errorf("refused network %s published: %s", name, v)
		}
	}

	// The underlay grows over a registered network: it is withdrawn.
	store.SetUnderlay(state.Underlay{Underlay: policy.Underlay{
		Addrs:  []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24"), netip.MustParsePrefix("198.19.7.2/24")},
		Routes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.19.7.0/24")},
	}}, "test")
	waitValue(t, cli, keys.Network("h1", "later"), false)
	waitValue(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.7.0/24")), false)
	// Removing a refused network clears its refusal.
	store.DeleteLocal("wide", "test")
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, ok := d.ctrl.Refused()["wide"]; ok {
			return fmt.Errorf("wide still refused")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for name, rule := range want {
		if reports[name][0] != rule || slices.Index(reports[name][1:], rule) >= 0 {
			t.Errorf("%s reported %v, want %s once", name, reports[name], rule)
		}
	}
	if got := reports["later"]; !slices.Equal(got, []string{policy.RuleUnderlay}) {
		t.Errorf("later reported %v", got)
	}
}

// Finding B2: flanneld run with --public-ip (behind NAT) announces this
// host's VTEP at that address; the registrar publishes the same one (from
// flanneld's lease, recognised by the device's MAC), so peers' FDB entry for
// the MAC agrees with flanneld's.
func TestPublishesFlannelsPublicIP(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	l := link()
	store.SetLink(l, "test")
	nat := netip.MustParseAddr("203.0.113.11")
	lease, err := json.Marshal(flannel.NewVXLAN(nat, 1, l.MAC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), keys.Subnet(netip.MustParsePrefix("198.18.11.0/24")), string(lease)); err != nil {
		t.Fatal(err)
	}
	store.PutLocal(local("app", "198.19.11.0/24"), "test")
	startDaemon(t, srv, "h1", store)
	waitValue(t, cli, keys.Network("h1", "app"), true)
	if v := value(t, cli, keys.Network("h1", "app")); !strings.Contains(v, `"PublicIP":"203.0.113.11"`) {
		t.Fatalf("record %s, want flanneld's PublicIP 203.0.113.11 (device's local address is %s)", v, l.Local)
	}
}
