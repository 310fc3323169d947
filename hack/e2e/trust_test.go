package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
)

// hostileRecord is a record another host (broken, compromised, or one
// typo away) publishes under our prefix.
type hostileRecord struct {
	name, subnet, publicIP, mac string
	raw                         string // the value as written, when not the plain record
}

func (r hostileRecord) value() string {
	if r.raw != "" {
		return r.raw
	}
	b, _ := json.Marshal(map[string]any{"Host": "evil", "Network": r.name, "NetworkID": "e" + r.name,
		"Subnet": r.subnet, "Gateway": "", "PublicIP": r.publicIP, "VtepMAC": r.mac, "VNI": 1})
	return string(b)
}

// The attack of issue 11, on the real lab while traffic flows: ten hostile
// records (etcd's address, a /1 and a /2, a peer's PublicIP, slices of
// another host's network and flannel subnet, cloud metadata, another host's
// VTEP MAC, multicast) and one with duplicate Subnet/subnet keys. None takes
// effect on any host, etcd stays reachable, traffic is intact, and each
// refusal is logged once per host. Then a local Docker network with a
// forbidden subnet is not published and gets no forwarding rule.
func TestHostileRecordsRefused(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	h2, h3 := l.Host(2), l.Host(3)
	h2MAC := vtepMAC(t, h2)
	h3Flannel, err := h3.FlannelSubnet()
	if err != nil {
		t.Fatal(err)
	}
	inside := func(cidr string, bits int) string {
		return netip.PrefixFrom(netip.MustParsePrefix(cidr).Masked().Addr(), bits).String()
	}
	const evilIP, evilMAC = "198.51.100.66", "aa:bb:cc:00:00:66"
	hostile := []hostileRecord{
		{name: "etcd", subnet: lab.EtcdIP + "/32"},
		{name: "half", subnet: "128.0.0.0/1"},
		{name: "quarter", subnet: "64.0.0.0/2"},
		{name: "peer", subnet: h2.IP + "/32"},
		{name: "slice", subnet: inside(base[2].Subnet, 25)},
		{name: "flannelslice", subnet: inside(h3Flannel, 26)},
		{name: "metadata", subnet: "169.254.169.254/32"},
		{name: "stolenmac", subnet: "198.19.90.0/24", mac: h2MAC},
		{name: "multicast", subnet: "224.0.0.0/4"},
		{name: "ownmac", subnet: "198.19.91.0/24", mac: "use-h1"},
		{name: "dupkey", subnet: "198.19.92.0/24", raw: `{"Host":"evil","Network":"dupkey","NetworkID":"x","Subnet":"198.19.92.0/24",` +
			`"subnet":"198.19.93.0/24","Gateway":"","PublicIP":"198.51.100.66","VtepMAC":"aa:bb:cc:00:00:66","VNI":1}`},
	}
	h1MAC := vtepMAC(t, l.Host(1))
	for i := range hostile {
		if hostile[i].publicIP == "" {
			hostile[i].publicIP = evilIP
		}
		switch hostile[i].mac {
		case "":
			hostile[i].mac = evilMAC
		case "use-h1":
			hostile[i].mac = h1MAC
		}
	}
	offsets := map[string]int64{}
	for _, h := range l.Hosts {
		offsets[h.Name] = logSize(h)
	}
	// Traffic flows across the attack: h1 -> h2 and h3 -> h1, 8 s at 5/s.
	pingers := map[string]*pinger{}
	for name, pair := range map[string][2]int{"h1->h2": {1, 2}, "h3->h1": {3, 1}} {
		p, err := startPinger(base[pair[0]], base[pair[1]].IP, 8*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		pingers[name] = p
	}
	wait(t, time.Second)
	err = withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		for _, r := range hostile {
			if _, err := cli.Put(ctx, registrarPrefix+"evil/"+r.name, r.value()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write hostile records: %v", err)
	}
	t.Cleanup(func() {
		_ = withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.Delete(ctx, registrarPrefix+"evil/", clientv3.WithPrefix())
			return err
		})
	})
	for name, p := range pingers {
		sent, received, err := p.wait()
		if err != nil || sent == 0 || received != sent {
			t.Errorf("%s during the attack: %d/%d replies (%v)", name, received, sent, err)
		}
	}
	for _, h := range l.Hosts {
		// 198.19.93.0/24 is the duplicate-key record's second Subnet.
		for _, cidr := range append(subnetsOf(hostile), "198.19.93.0/24") {
			if route, _ := routeTo(h, cidr); strings.Contains(route, lab.VXLANDevice) || strings.Contains(route, "proto 76") {
				t.Errorf("%s programmed hostile %s: %s", h.Name, cidr, route)
			}
		}
		// etcd is still reached through the underlay, and h2's VTEP still at h2.
		if via, err := h.Run(ctx, "ip", "route", "get", lab.EtcdIP); err != nil || strings.Contains(via, lab.VXLANDevice) {
			t.Errorf("%s: route to etcd: %s (%v)", h.Name, via, err)
		}
		if h != h2 {
			if fdb, _ := h.Run(ctx, "bridge", "fdb", "show", "dev", lab.VXLANDevice); !strings.Contains(fdb, h2MAC+" dst "+h2.IP+" ") {
				t.Errorf("%s: h2's VTEP %s moved:\n%s", h.Name, h2MAC, fdb)
			}
		}
		logs := registrarLogSince(h, offsets[h.Name])
		for _, r := range hostile {
			if n := countRefusals(logs, r); n != 1 {
				t.Errorf("%s logged the refusal of %s (%s) %d times, want once", h.Name, r.name, r.subnet, n)
			}
		}
	}
	if err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Get(ctx, "health")
		return err
	}); err != nil {
		t.Errorf("etcd after the attack: %v", err)
	}
	if err := allPairs(ctx, baseNets()); err != nil {
		t.Errorf("all pairs after the attack: %v", err)
	}
	forbiddenLocalNetwork(t, l)
}

func subnetsOf(rs []hostileRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.subnet
	}
	return out
}

// vtepMAC is h's flannel.1 MAC (sysfs is the root namespace's under
// nsenter --net, so ask ip).
func vtepMAC(t *testing.T, h *lab.Host) string {
	t.Helper()
	out, err := h.Run(context.Background(), "ip", "-o", "link", "show", lab.VXLANDevice)
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("%s: no MAC of %s in %q (%v)", h.Name, lab.VXLANDevice, out, err)
	return ""
}

// countRefusals counts the log lines that refuse r: a policy refusal naming
// its subnet, or (the duplicate-key record) an invalid item naming its key.
func countRefusals(logs string, r hostileRecord) int {
	n := 0
	for _, line := range splitLines(logs) {
		switch {
		case r.raw != "" && strings.Contains(line, "invalid") && strings.Contains(line, "evil/"+r.name):
			n++
		case r.raw == "" && strings.Contains(line, "refused by policy") && strings.Contains(line, `"subnet":"`+r.subnet+`"`):
			n++
		}
	}
	return n
}

// forbiddenLocalNetwork: a Docker network on a subnet no host may route
// (link-local) is not published, gets no forwarding rule, and says why.
func forbiddenLocalNetwork(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx := context.Background()
	h1 := l.Host(1)
	offset := logSize(h1)
	const subnet = "169.254.77.0/24"
	if err := h1.CreateNetwork(ctx, "forbidden", subnet); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h1.RemoveNetwork(context.Background(), "forbidden") })
	eventually(t, 10*time.Second, "refusal of the forbidden network logged", func() error {
		for _, line := range splitLines(registrarLogSince(h1, offset)) {
			if strings.Contains(line, "not published: refused by policy") && strings.Contains(line, subnet) {
				return nil
			}
		}
		return fmt.Errorf("no refusal of %s in %s", subnet, h1.Log(lab.Registrar))
	})
	wait(t, time.Second)
	if err := absentInEtcd(l, registrarPrefix+"h1/forbidden", flannelSubnets+"169.254.77.0-24"); err != nil {
		t.Error(err)
	}
	if rules, err := h1.Run(ctx, "iptables", "-S", "FLANNEL-REGISTRAR-FWD"); err != nil || strings.Contains(rules, "169.254.77.0") {
		t.Errorf("forwarding rules for the forbidden network: %s (%v)", rules, err)
	}
}
