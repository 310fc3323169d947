package docker

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// userNet is a typical `docker network create --subnet 10.5.35.0/24 app1`.
func userNet(mod func(*network.Inspect)) network.Inspect {
	n := network.Inspect{
		Name: "app1", ID: testID, Scope: "local", Driver: "bridge",
		IPAM:    network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: "10.5.35.0/24", Gateway: "10.5.35.1"}}},
		Options: map[string]string{}, Labels: map[string]string{},
	}
	if mod != nil {
		mod(&n)
	}
	return n
}

func TestEligible(t *testing.T) {
	want := state.LocalNetwork{
		ID: testID, Name: "app1", Subnet: netip.MustParsePrefix("10.5.35.0/24"),
		Gateway: netip.MustParseAddr("10.5.35.1"), Bridge: "br-0123456789ab",
	}
	for _, tc := range []struct {
		name   string
		mod    func(*network.Inspect)
		want   *state.LocalNetwork // nil: not eligible
		reason string              // part of the reason
		v      verdict
	}{
		{name: "user bridge", want: &want},
		{name: "no gateway shown", mod: func(n *network.Inspect) { n.IPAM.Config[0].Gateway = "" },
			want: &state.LocalNetwork{ID: testID, Name: "app1", Subnet: want.Subnet, Bridge: want.Bridge}},
		{name: "gateway as CIDR", mod: func(n *network.Inspect) { n.IPAM.Config[0].Gateway = "10.5.35.1/24" }, want: &want},
		{name: "custom bridge name", mod: func(n *network.Inspect) { n.Options[OptBridgeName] = "appbr0" },
			want: &state.LocalNetwork{ID: testID, Name: "app1", Subnet: want.Subnet, Gateway: want.Gateway, Bridge: "appbr0"}},
		{name: "IPv6 first, IPv4 second", mod: func(n *network.Inspect) {
			n.EnableIPv6 = true
			n.IPAM.Config = append([]network.IPAMConfig{{Subnet: "fd00:1::/64", Gateway: "fd00:1::1"}}, n.IPAM.Config...)
		}, want: &want},
		{name: "subnet not canonical is masked", mod: func(n *network.Inspect) { n.IPAM.Config[0].Subnet = "10.5.35.7/24" }, want: &want},
		{name: "label true", mod: func(n *network.Inspect) { n.Labels[LabelEnable] = "true" }, want: &want},
		{name: "groups label", mod: func(n *network.Inspect) { n.Labels[registry.GroupLabel] = "web, db,web" },
			want: &state.LocalNetwork{ID: testID, Name: "app1", Subnet: want.Subnet, Gateway: want.Gateway, Bridge: want.Bridge, Groups: []string{"db", "web"}}},

		{name: "default bridge by name", mod: func(n *network.Inspect) { n.Name = "bridge" }, reason: "default bridge", v: skip},
		{name: "default bridge by option", mod: func(n *network.Inspect) { n.Name = "docker0ish"; n.Options[OptDefaultBridge] = "true" }, reason: "default bridge", v: skip},
		{name: "host", mod: func(n *network.Inspect) { n.Name, n.Driver = "host", "host"; n.IPAM.Config = nil }, reason: `driver "host"`, v: skip},
		{name: "none", mod: func(n *network.Inspect) { n.Name, n.Driver = "none", "null"; n.IPAM.Config = nil }, reason: `driver "null"`, v: skip},
		{name: "macvlan", mod: func(n *network.Inspect) { n.Driver = "macvlan" }, reason: `driver "macvlan"`, v: skip},
		{name: "overlay", mod: func(n *network.Inspect) { n.Driver, n.Scope = "overlay", "swarm" }, reason: `driver "overlay"`, v: skip},
		{name: "internal", mod: func(n *network.Inspect) { n.Internal = true }, reason: "internal", v: skip},
		{name: "config only", mod: func(n *network.Inspect) { n.ConfigOnly = true }, reason: "config-only", v: skip},
		{name: "swarm gateway bridge", mod: func(n *network.Inspect) { n.Name = "docker_gwbridge" }, reason: "swarm", v: skip},
		{name: "labelled out", mod: func(n *network.Inspect) { n.Labels[LabelEnable] = "false" }, reason: LabelEnable + "=false", v: skip},
		{name: "labelled out with 0", mod: func(n *network.Inspect) { n.Labels[LabelEnable] = "0" }, reason: LabelEnable, v: skip},
		{name: "IPv6 only", mod: func(n *network.Inspect) { n.IPAM.Config = []network.IPAMConfig{{Subnet: "fd00:1::/64"}} }, reason: "no IPv4 subnet", v: skip},
		{name: "no IPAM config", mod: func(n *network.Inspect) { n.IPAM.Config = nil }, reason: "no IPv4 subnet", v: skip},

		{name: "label not a boolean", mod: func(n *network.Inspect) { n.Labels[LabelEnable] = "maybe" }, reason: "not a boolean", v: invalid},
		{name: "bad group name", mod: func(n *network.Inspect) { n.Labels[registry.GroupLabel] = "web,d b" }, reason: registry.GroupLabel, v: invalid},
		{name: "empty group label", mod: func(n *network.Inspect) { n.Labels[registry.GroupLabel] = "" }, reason: "1 to 63", v: invalid},
		{name: "bad subnet", mod: func(n *network.Inspect) { n.IPAM.Config[0].Subnet = "10.5.35.0/33" }, reason: "IPAM subnet", v: invalid},
		{name: "bad gateway", mod: func(n *network.Inspect) { n.IPAM.Config[0].Gateway = "gw" }, reason: "IPAM gateway", v: invalid},
		{name: "gateway outside subnet", mod: func(n *network.Inspect) { n.IPAM.Config[0].Gateway = "10.9.9.1" }, reason: "outside", v: invalid},
		{name: "short ID", mod: func(n *network.Inspect) { n.ID = "abc" }, reason: "too short", v: invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := userNet(tc.mod)
			got, reason, ok := Eligible(n)
			if tc.want != nil {
				if !ok || !reflect.DeepEqual(got, *tc.want) {
					t.Fatalf("Eligible = %+v, %q, %v; want %+v", got, reason, ok, *tc.want)
				}
				return
			}
			if ok || !strings.Contains(reason, tc.reason) {
				t.Fatalf("Eligible = %+v, %q, %v; want not eligible because %q", got, reason, ok, tc.reason)
			}
			if _, _, v := classify(n); v != tc.v {
				t.Fatalf("verdict %d, want %d", v, tc.v)
			}
		})
	}
}
