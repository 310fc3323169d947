package etcd

import (
	"net/netip"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

var fuzzKeys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

// FuzzDecodeKV: any key and value another host (or anyone with write access
// to the prefixes) puts in etcd decodes without panicking, and what passes
// is consistent: a record names its key's host and network, a vxlan lease
// has a usable PublicIP, a unicast VTEP MAC and a 24-bit VNI.
func FuzzDecodeKV(f *testing.F) {
	f.Add("/flannel/network/subnets/h2/app1", []byte(`{"Host":"h2","Network":"app1","NetworkID":"0123456789abcdef","Subnet":"10.5.35.0/24","Gateway":"10.5.35.1","PublicIP":"198.51.100.2","VtepMAC":"02:42:c6:33:64:02","VNI":1}`))
	f.Add("/coreos.com/network/subnets/10.5.36.0-24", []byte(`{"PublicIP":"198.51.100.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:2a:9f:10:22:33"}}`))
	f.Add("/coreos.com/network/subnets/10.5.37.0-24", []byte(`{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"app2"}}`))
	f.Add("/flannel/network/subnets/_hosts/h1", []byte(`{"Host":"h1","PublicIP":"198.51.100.1","VtepMAC":"02:42:c6:33:64:01","VNI":1}`))
	f.Add("/coreos.com/network/subnets/garbage", []byte(`{`))
	f.Add("/coreos.com/network/subnets/10.5.38.0-24", []byte(`{"PublicIP":"127.0.0.1","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"ff:ff:ff:ff:ff:ff"}}`))
	w := &Watcher{o: Options{Keys: fuzzKeys}}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		it, err := w.decode(&mvccpb.KeyValue{Key: []byte(key), Value: value})
		if err != nil {
			return
		}
		switch it.kind {
		case registry.KindNetwork:
			pk, perr := fuzzKeys.Parse(key)
			if perr != nil || it.network.Host != pk.Host || it.network.Network != pk.Network {
				t.Fatalf("record %+v accepted at key %q (%+v, %v)", it.network, key, pk, perr)
			}
		case registry.KindSubnet:
			if !it.lease.Subnet.IsValid() || !it.lease.Subnet.Addr().Is4() {
				t.Fatalf("lease with subnet %v accepted at key %q", it.lease.Subnet, key)
			}
			if it.lease.Raw.BackendType == flannel.BackendVXLAN {
				ip := it.lease.PublicIP
				if !ip.Is4() || ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() {
					t.Fatalf("vxlan lease with PublicIP %v accepted", ip)
				}
				if len(it.lease.VtepMAC) != 6 || it.lease.VtepMAC[0]&1 != 0 || it.lease.VNI >= 1<<24 {
					t.Fatalf("vxlan lease with MAC %v VNI %d accepted", it.lease.VtepMAC, it.lease.VNI)
				}
			}
		case registry.KindHost:
			if !strings.HasSuffix(key, "/"+it.host.Host) {
				t.Fatalf("host record of %q accepted at key %q", it.host.Host, key)
			}
		}
	})
}

// FuzzDecodeLease: a lease value for a fixed subnet never panics, and an
// accepted lease keeps that subnet.
func FuzzDecodeLease(f *testing.F) {
	f.Add([]byte(`{"PublicIP":"198.51.100.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:2a:9f:10:22:33"}}`))
	f.Add([]byte(`{"PublicIP":"0.0.0.0","BackendType":"flannel-registrar","BackendData":{"Host":"h1","Network":"n"}}`))
	f.Add([]byte(`{"PublicIP":"198.51.100.3","BackendType":"host-gw"}`))
	p := netip.MustParsePrefix("10.5.40.0/24")
	f.Fuzz(func(t *testing.T, value []byte) {
		l, err := DecodeLease(p, value)
		if err == nil && l.Subnet != p {
			t.Fatalf("lease for %s came back as %s", p, l.Subnet)
		}
	})
}
