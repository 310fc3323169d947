package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// gwStateDir is the routed lab's (namespaces frlab-gw-underlay, frlab-gw-gw,
// frlab-gw-h1, ...); it runs next to the shared lab of TestMain.
const gwStateDir = "/run/frlab-gw"

// Indirect routing with real traffic, on a lab of its own in the routed
// topology: h1 and h2 on 198.51.100.0/25 (with etcd), h3 on
// 198.51.100.128/25, joined only by the gateway namespace; h3 reaches etcd
// by a /32 through the gateway and nothing else.
//
//	(a) without HOST_GATEWAY_MAP the overlay is complete (every record
//	    routed, FDB entries in place) but near and far do not reach each
//	    other, and flannel's own subnets neither; near and near do;
//	(b) with HOST_GATEWAY_MAP (the other side's /25 via this side's gateway
//	    leg) every pair reaches, both ways, with the sender's container
//	    address seen by the receiver;
//	(c) with FLANNEL_ROUTES_EXTRA, the gateway's extra range (on its lo,
//	    reachable only through it) answers every host and container; a
//	    configured route deleted by hand comes back;
//	(d) with both entries dropped from the settings, a restart removes the
//	    routes (ours only: the management /32 stays) and traffic stops again.
func TestIndirectRouting(t *testing.T) {
	if !enabled {
		t.Skip("end-to-end tier: set FR_E2E=1 and run as root (make test-e2e)")
	}
	testutil.RequireRoot(t)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := lab.Down(ctx, gwStateDir); err != nil {
		t.Fatalf("remove an old routed lab: %v", err)
	}
	l, err := lab.Up(ctx, lab.Options{
		Hosts: 3, StateDir: gwStateDir, Registrar: true, Interval: 10, Topology: lab.TopologyRouted,
		Progress: func(s string) { t.Logf("[%5.1fs] %s", time.Since(began).Seconds(), s) },
	})
	t.Cleanup(func() {
		if t.Failed() && l != nil {
			dumpLab(t, l)
		}
		if os.Getenv("FR_E2E_KEEP") == "1" {
			t.Logf("routed lab kept in %s; remove with: go run ./hack/labctl down --state %s", gwStateDir, gwStateDir)
			return
		}
		downCtx, downCancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer downCancel()
		if err := lab.Down(downCtx, gwStateDir); err != nil {
			t.Errorf("routed lab down: %v", err)
		}
		t.Logf("scenario %s took %s (lab up and down included)", t.Name(), time.Since(began).Round(100*time.Millisecond))
	})
	if err != nil {
		t.Fatalf("routed lab: %v", err)
	}
	h1, h2, h3 := l.Host(1), l.Host(2), l.Host(3)
	if h1.Far() || h2.Far() || !h3.Far() {
		t.Fatalf("expected h1, h2 near and h3 far: %v %v %v", h1.Far(), h2.Far(), h3.Far())
	}
	var nets []*testNet
	for _, h := range l.Hosts {
		n, err := newNet(ctx, h, fmt.Sprintf("gnet%d", h.Index), fmt.Sprintf("198.19.%d.0/24", 10+h.Index))
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, n)
	}
	n1, n2, n3 := nets[0], nets[1], nets[2]
	crossing := [][2]*testNet{{n1, n3}, {n3, n1}, {n2, n3}, {n3, n2}}

	// (a) No HOST_GATEWAY_MAP: the overlay state is complete, the underlay
	// path is not.
	for _, n := range nets {
		eventually(t, 60*time.Second, "route to "+n.Subnet, func() error { return routedEverywhere(l, n) })
	}
	eventually(t, 30*time.Second, "near pairs", func() error { return allPairs(ctx, []*testNet{n1, n2}) })
	for _, h := range []*lab.Host{h1, h2} {
		if out, err := h.Run(ctx, "ip", "route", "get", h3.IP); err == nil {
			t.Fatalf("%s has a route to the far host %s without HOST_GATEWAY_MAP: %s", h.Name, h3.IP, out)
		}
	}
	if out, err := h3.Run(ctx, "ip", "route", "get", lab.EtcdIP); err != nil || !strings.Contains(out, "via "+lab.GatewayFarIP) {
		t.Fatalf("far host: management route to etcd: %q, %v", out, err)
	}
	expectPings(t, crossing, false, "(a) without HOST_GATEWAY_MAP")
	expectFlannelPath(t, ctx, l, h1, h3, false, "(a)")
	expectExtra(t, ctx, l, nil, false, "(a)")

	// (b) HOST_GATEWAY_MAP on every host: the other side's /25 via its
	// gateway leg. ALLOWED_SUBNETS lets the underlay range through, so that
	// only the underlay rule keeps a hostile record over the far side's
	// range (which holds no known VTEP) out of the tunnel.
	allowUnderlay := "ALLOWED_SUBNETS=" + lab.AllowedSubnets + ",198.51.100.0/24"
	restartAll(t, ctx, l, func(h *lab.Host) []string { return []string{h.GatewayMapEnv(), allowUnderlay} })
	for _, h := range l.Hosts {
		want := h.OtherSideCIDR() + " via " + h.GatewayIP()
		eventually(t, 30*time.Second, h.Name+": gateway route", func() error { return ourUnderlayRoutes(ctx, h, want) })
	}
	eventually(t, 30*time.Second, "all pairs across the gateway", func() error { return allPairs(ctx, nets) })
	for _, p := range crossing {
		peers, err := p[0].Host.TCPPeers(ctx, p[0].Container, p[1].IP)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("(b) tcp %s(%s) -> %s(%s): receiver saw %v", p[0].IP, p[0].Host.Name, p[1].IP, p[1].Host.Name, peers)
	}
	expectPings(t, crossing, true, "(b) with HOST_GATEWAY_MAP")
	hostileOverGatewayRange(t, ctx, l, nets)
	expectFlannelPath(t, ctx, l, h1, h3, true, "(b)")
	expectFlannelPath(t, ctx, l, h3, h2, true, "(b)")

	// (c) FLANNEL_ROUTES_EXTRA: the extra range via the gateway, once with
	// an explicit device.
	extra := map[string]string{
		h1.Name: lab.ExtraCIDR + ":" + lab.GatewayNearIP + ":eth0",
		h2.Name: lab.ExtraCIDR + ":" + lab.GatewayNearIP,
		h3.Name: lab.ExtraCIDR + ":" + lab.GatewayFarIP,
	}
	restartAll(t, ctx, l, func(h *lab.Host) []string {
		return []string{h.GatewayMapEnv(), "FLANNEL_ROUTES_EXTRA=" + extra[h.Name]}
	})
	for _, h := range l.Hosts {
		want := []string{h.OtherSideCIDR() + " via " + h.GatewayIP(), lab.ExtraCIDR + " via " + h.GatewayIP()}
		eventually(t, 30*time.Second, h.Name+": extra route", func() error { return ourUnderlayRoutes(ctx, h, want...) })
	}
	expectExtra(t, ctx, l, nets, true, "(c)")
	// Deleted by hand, a configured route comes back (netlink event).
	if _, err := h1.Run(ctx, "ip", "route", "del", lab.FarCIDR, "via", lab.GatewayNearIP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "h1: gateway route put back", func() error {
		return ourUnderlayRoutes(ctx, h1, lab.FarCIDR+" via "+lab.GatewayNearIP, lab.ExtraCIDR+" via "+lab.GatewayNearIP)
	})
	eventually(t, 30*time.Second, "all pairs with the extra routes", func() error { return allPairs(ctx, nets) })

	// (d) Both dropped from the settings: a restart removes them.
	restartAll(t, ctx, l, func(*lab.Host) []string { return nil })
	for _, h := range l.Hosts {
		eventually(t, 30*time.Second, h.Name+": configured routes removed", func() error { return ourUnderlayRoutes(ctx, h) })
	}
	if out, err := h3.Run(ctx, "ip", "-4", "route", "show", lab.EtcdIP+"/32"); err != nil || !strings.Contains(out, "via "+lab.GatewayFarIP) {
		t.Fatalf("far host: the management route (not ours) must stay: %q, %v", out, err)
	}
	for _, n := range nets {
		eventually(t, 30*time.Second, "route to "+n.Subnet, func() error { return routedEverywhere(l, n) })
	}
	expectPings(t, crossing, false, "(d) entries dropped")
	expectFlannelPath(t, ctx, l, h1, h3, false, "(d)")
	expectExtra(t, ctx, l, nil, false, "(d)")
	if err := allPairs(ctx, []*testNet{n1, n2}); err != nil {
		t.Fatalf("(d) near pairs: %v", err)
	}
}

// hostileOverGatewayRange writes a record over a slice of the far side's
// underlay (198.51.100.160/27: no host there, the hijack of other machines
// behind the gateway) and checks that the near hosts refuse it by the
// underlay rule (HOST_GATEWAY_MAP's range) and route nothing into the
// tunnel, while every pair still reaches.
func hostileOverGatewayRange(t *testing.T, ctx context.Context, l *lab.Lab, nets []*testNet) {
	t.Helper()
	const subnet = "198.51.100.160/27"
	offsets := map[string]int64{}
	for _, h := range l.Hosts {
		offsets[h.Name] = logSize(h)
	}
	r := hostileRecord{name: "gwslice", subnet: subnet, publicIP: "198.51.100.66", mac: "aa:bb:cc:00:00:66"}
	key := registrarPrefix + "evil/" + r.name
	if err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Put(ctx, key, r.value())
		return err
	}); err != nil {
		t.Fatalf("write the hostile record: %v", err)
	}
	defer func() {
		if err := withEtcd(l, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.Delete(ctx, key)
			return err
		}); err != nil {
			t.Errorf("delete the hostile record: %v", err)
		}
	}()
	for _, h := range l.Hosts {
		if h.Far() {
			continue // its connected /25: refused as before
		}
		eventually(t, 30*time.Second, h.Name+": hostile record refused", func() error {
			for _, line := range splitLines(registrarLogSince(h, offsets[h.Name])) {
				if strings.Contains(line, "refused by policy") && strings.Contains(line, `"subnet":"`+subnet+`"`) &&
					strings.Contains(line, `"rule":"underlay"`) && strings.Contains(line, "HOST_GATEWAY_MAP") {
					t.Logf("(b) %s: %s", h.Name, line)
					return nil
				}
			}
			return fmt.Errorf("no underlay refusal of %s logged", subnet)
		})
		if route, err := routeTo(h, subnet); err != nil || route != "" {
			t.Errorf("%s routes the hostile %s: %q (%v)", h.Name, subnet, route, err)
		}
	}
	if err := allPairs(ctx, nets); err != nil {
		t.Errorf("(b) with a hostile record over the gateway's range: %v", err)
	}
}

// restartAll restarts every host's registrar with the settings env(h) adds.
func restartAll(t *testing.T, ctx context.Context, l *lab.Lab, env func(*lab.Host) []string) {
	t.Helper()
	for _, h := range l.Hosts {
		e := env(h)
		if err := h.RestartRegistrar(ctx, e...); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: registrar restarted with %v", h.Name, e)
	}
}

// ourUnderlayRoutes checks that the routes of protocol 76 outside the VXLAN
// device (the configured ones) are exactly want, as `ip route show proto 76
// dev eth0` prints them ("<dst> via <gateway>"), in any order, and that no
// route of ours is on another device.
func ourUnderlayRoutes(ctx context.Context, h *lab.Host, want ...string) error {
	all, err := h.Run(ctx, "ip", "-4", "route", "show", "proto", "76")
	if err != nil {
		return err
	}
	var got []string
	for _, line := range nonEmpty(all) {
		switch {
		case strings.Contains(line, " dev "+lab.VXLANDevice+" "):
		case strings.HasSuffix(line, " dev eth0"):
			got = append(got, strings.TrimSuffix(line, " dev eth0"))
		default:
			return fmt.Errorf("%s: route of ours on neither %s nor eth0: %q", h.Name, lab.VXLANDevice, line)
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: configured routes (proto 76, eth0) %q, want %q", h.Name, got, want)
	}
	return nil
}

func nonEmpty(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// expectPings sends 10 pings (200 ms apart) for every pair at once and
// checks that every pair got answers (open) or none at all (closed).
func expectPings(t *testing.T, pairs [][2]*testNet, open bool, what string) {
	t.Helper()
	ps := make([]*pinger, len(pairs))
	for i, p := range pairs {
		var err error
		if ps[i], err = startPinger(p[0], p[1].IP, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pairs {
		sent, received, err := ps[i].wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: ping %s(%s) -> %s(%s): %d/%d answered", what, p[0].IP, p[0].Host.Name, p[1].IP, p[1].Host.Name, received, sent)
		switch {
		case sent == 0:
			t.Errorf("%s: no ping sent from %s", what, p[0].Container)
		case open && received == 0:
			t.Errorf("%s: %s -> %s: no ping answered, want answers", what, p[0].Host.Name, p[1].Host.Name)
		case !open && received > 0:
			t.Errorf("%s: %s -> %s: %d pings answered, want none", what, p[0].Host.Name, p[1].Host.Name, received)
		}
	}
}

// expectFlannelPath pings, from host from's namespace, the docker0 address
// of host to (flannel's own lease, routed by flanneld over flannel.1): it
// needs the same underlay path as the records.
func expectFlannelPath(t *testing.T, ctx context.Context, l *lab.Lab, from, to *lab.Host, open bool, what string) {
	t.Helper()
	subnet, err := to.FlannelSubnet()
	if err != nil {
		t.Fatal(err)
	}
	ip, _, _ := strings.Cut(subnet, "/")
	sent, received, err := hostPings(ctx, from, ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: ping from host %s to %s's docker0 %s (flannel's lease): %d/%d answered", what, from.Name, to.Name, ip, received, sent)
	if open && received == 0 || !open && received > 0 {
		t.Errorf("%s: flannel path %s -> %s: %d/%d answered, want open=%v", what, from.Name, to.Name, received, sent, open)
	}
}

// expectExtra pings the gateway's extra range from every host's namespace
// and from every container in nets.
func expectExtra(t *testing.T, ctx context.Context, l *lab.Lab, nets []*testNet, open bool, what string) {
	t.Helper()
	for _, h := range l.Hosts {
		sent, received, err := hostPings(ctx, h, lab.ExtraIP)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: ping from host %s to %s (FLANNEL_ROUTES_EXTRA's range): %d/%d answered", what, h.Name, lab.ExtraIP, received, sent)
		if open && received == 0 || !open && received > 0 {
			t.Errorf("%s: %s -> %s: %d/%d answered, want open=%v", what, h.Name, lab.ExtraIP, received, sent, open)
		}
	}
	for _, n := range nets {
		if err := n.Host.Ping(ctx, n.Container, lab.ExtraIP); (err == nil) != open {
			t.Errorf("%s: ping from container %s on %s to %s: %v, want open=%v", what, n.Container, n.Host.Name, lab.ExtraIP, err, open)
		}
	}
}

// hostPings sends 5 pings (200 ms apart) from the host's namespace with the
// lab's static busybox; a ping refused at once for want of a route counts 5
// sent, none answered.
func hostPings(ctx context.Context, h *lab.Host, ip string) (sent, received int, err error) {
	const n = 5
	bb, err := lab.FindBusybox()
	if err != nil {
		return 0, 0, err
	}
	out, _ := h.Run(ctx, bb, "ping", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "1", ip)
	m := pingStats.FindStringSubmatch(out)
	switch {
	case m == nil && strings.Contains(out, "Network is unreachable"):
		return n, 0, nil // nothing left the host
	case m == nil:
		return 0, 0, fmt.Errorf("%s: ping %s: no statistics in %q", h.Name, ip, out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// dumpLab logs the routed lab's registrar log tails and routes.
func dumpLab(t *testing.T, l *lab.Lab) {
	for _, h := range l.Hosts {
		out, _ := tail(h.Log(lab.Registrar), 25)
		t.Logf("---- %s registrar log (tail) ----\n%s", h.Name, out)
		routes, _ := h.Run(context.Background(), "ip", "route")
		t.Logf("---- %s ip route ----\n%s", h.Name, routes)
	}
}
