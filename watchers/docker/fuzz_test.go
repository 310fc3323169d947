package docker

import (
	"encoding/json"
	"testing"

	"github.com/docker/docker/api/types/network"
)

// FuzzEligible: whatever Docker (or a plugin, or a tampered daemon) reports
// for a network, classifying it never panics, and an accepted network is a
// usable spec: an IPv4 subnet in its canonical form, its gateway inside it,
// a bridge name, the network's own ID and name.
func FuzzEligible(f *testing.F) {
	f.Add([]byte(`{"Name":"app1","Id":"3f1e5c0a9b7d2e4f6a8c0b1d3e5f7a9c","Driver":"bridge","Scope":"local","IPAM":{"Config":[{"Subnet":"10.5.35.0/24","Gateway":"10.5.35.1"}]}}`))
	f.Add([]byte(`{"Name":"app2","Id":"0123456789abcdef","Driver":"bridge","IPAM":{"Config":[{"Subnet":"fd00::/64"},{"Subnet":"10.5.36.7/24","Gateway":"10.5.36.1/24"}]},"Options":{"com.docker.network.bridge.name":"br-app2"},"Labels":{"flannel-registrar.group":"a,b"}}`))
	f.Add([]byte(`{"Name":"bridge","Id":"0123456789abcdef","Driver":"bridge","IPAM":{"Config":[{"Subnet":"172.17.0.0/16"}]}}`))
	f.Add([]byte(`{"Name":"x","Id":"0123456789abcdef","Driver":"bridge","IPAM":{"Config":[{"Subnet":"10.5.37.0/24","Gateway":"10.6.0.1"}]},"Labels":{"flannel-registrar.enable":"maybe"}}`))
	f.Fuzz(func(t *testing.T, inspect []byte) {
		var n network.Inspect
		if err := json.Unmarshal(inspect, &n); err != nil {
			return
		}
		ln, reason, ok := Eligible(n)
		if !ok {
			if reason == "" {
				t.Fatal("refused without a reason")
			}
			return
		}
		if !ln.Subnet.IsValid() || !ln.Subnet.Addr().Is4() || ln.Subnet != ln.Subnet.Masked() {
			t.Fatalf("accepted subnet %v", ln.Subnet)
		}
		if ln.Gateway.IsValid() && !ln.Subnet.Contains(ln.Gateway) {
			t.Fatalf("accepted gateway %v outside %v", ln.Gateway, ln.Subnet)
		}
		if ln.Bridge == "" || ln.ID != n.ID || ln.Name != n.Name {
			t.Fatalf("accepted %+v from %s", ln, inspect)
		}
	})
}
