package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// SettleNet is how long after its create or rm a churn network is left out
// of the record and route checks (registration takes milliseconds; this
// keeps a check from catching one half-done).
const SettleNet = 3 * time.Second

// liveNet is a network the soak created: wanted until removed.
type liveNet struct {
	wantNet
	host      *lab.Host
	container string
	changed   time.Time
}

// nets is the set of networks that should exist, shared by the churn and
// the checks.
type nets struct {
	mu      sync.Mutex // guards live and gone
	live    []*liveNet
	gone    []*liveNet // removed, still settling
	created int        // churn networks created so far
}

func (n *nets) add(x *liveNet) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.live = append(n.live, x)
}

func (n *nets) remove(x *liveNet, at time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.live = slices.DeleteFunc(n.live, func(y *liveNet) bool { return y == x })
	x.changed = at
	n.gone = append(n.gone, x)
}

// wanted returns the live networks and those settling (created or removed
// less than SettleNet ago).
func (n *nets) wanted(now time.Time) (want, settling []wantNet) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gone = slices.DeleteFunc(n.gone, func(x *liveNet) bool { return now.Sub(x.changed) >= SettleNet })
	for _, x := range n.live {
		want = append(want, x.wantNet)
		if now.Sub(x.changed) < SettleNet {
			settling = append(settling, x.wantNet)
		}
	}
	for _, x := range n.gone {
		settling = append(settling, x.wantNet)
	}
	return want, settling
}

// checker tests the lab for full connectivity: every wanted route present
// (and no stale one of ours), every record and reservation as expected.
type checker struct {
	l    *lab.Lab
	nets *nets
	cli  *clientv3.Client
	hds  []*netlink.Handle // per host, index i-1
}

func newChecker(l *lab.Lab, n *nets) (*checker, error) {
	c := &checker{l: l, nets: n}
	// The lab's client has gRPC's default reconnect backoff (up to 2 min):
	// after an etcd restart the check itself would be what is slow.
	var eps []string
	for i := 1; i <= l.EtcdMemberCount(); i++ {
		eps = append(eps, "unix://"+l.EtcdMemberSocket(i))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
		Logger: zap.NewNop(), // its retries during the etcd faults are expected
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	c.cli = cli
	for _, h := range l.Hosts {
		hd, err := h.Netlink()
		if err != nil {
			c.close()
			return nil, err
		}
		c.hds = append(c.hds, hd)
	}
	return c, nil
}

func (c *checker) close() {
	for _, hd := range c.hds {
		hd.Close()
	}
	if c.cli != nil {
		_ = c.cli.Close()
	}
}

// facts reads every host's PublicIP and flannel.1 MAC, and its flannel
// subnet (from subnet.env).
func (c *checker) facts() (map[string]hostFacts, map[string]netip.Prefix, error) {
	facts := map[string]hostFacts{}
	flan := map[string]netip.Prefix{}
	var errs []error
	for i, h := range c.l.Hosts {
		f := hostFacts{PublicIP: h.IP}
		link, err := c.hds[i].LinkByName(lab.VXLANDevice)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", h.Name, lab.VXLANDevice, err))
		} else {
			f.VtepMAC = link.Attrs().HardwareAddr.String()
		}
		facts[h.Name] = f
		s, err := h.FlannelSubnet()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: FLANNEL_SUBNET %q: %w", h.Name, s, err))
			continue
		}
		flan[h.Name] = p.Masked()
	}
	return facts, flan, errors.Join(errs...)
}

// check returns nil when the lab is fully converged (pings aside).
func (c *checker) check(ctx context.Context) error {
	want, settling := c.nets.wanted(time.Now())
	facts, flan, err := c.facts()
	if err != nil {
		return err
	}
	if err := c.checkRoutes(want, settling, flan); err != nil {
		return err
	}
	missing, extra, err := c.records(ctx, want, settling, facts)
	if err != nil {
		return err
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("etcd: %d missing or wrong, %d extra: %s", len(missing), len(extra), strings.Join(append(missing, extra...), "; "))
	}
	return nil
}

// records reads our records and flannel's subnets and diffs them.
func (c *checker) records(ctx context.Context, want, settling []wantNet, facts map[string]hostFacts) (missing, extra []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	get := func(prefix string) (map[string]string, error) {
		resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("etcd get %s: %w", prefix, err)
		}
		m := map[string]string{}
		for _, kv := range resp.Kvs {
			m[string(kv.Key)] = string(kv.Value)
		}
		return m, nil
	}
	records, err := get(keys.Records())
	if err != nil {
		return nil, nil, err
	}
	subnets, err := get(keys.Subnets())
	if err != nil {
		return nil, nil, err
	}
	missing, extra = diffRecords(want, settling, records, subnets, facts)
	return missing, extra, nil
}

// checkRoutes: on every host, each other host's wanted network and flannel
// subnet is routed through flannel.1, and no route of ours (protocol 76)
// there is for a network nobody wants.
func (c *checker) checkRoutes(want, settling []wantNet, flan map[string]netip.Prefix) error {
	for i, h := range c.l.Hosts {
		hd := c.hds[i]
		link, err := hd.LinkByName(lab.VXLANDevice)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", h.Name, lab.VXLANDevice, err)
		}
		routes, err := hd.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("%s: routes: %w", h.Name, err)
		}
		have := map[netip.Prefix]netlink.RouteProtocol{}
		for _, r := range routes {
			if r.Dst != nil && r.Table == 254 {
				have[prefixOf(r.Dst)] = r.Protocol
			}
		}
		need := map[netip.Prefix]bool{}
		for host, p := range flan {
			if host != h.Name {
				need[p] = true
			}
		}
		for _, w := range want {
			if w.Host != h.Name {
				need[w.Subnet] = true
			}
		}
		for _, w := range settling {
			delete(need, w.Subnet)
		}
		for p := range need {
			if _, ok := have[p]; !ok {
				return fmt.Errorf("%s: no route to %s via %s", h.Name, p, lab.VXLANDevice)
			}
		}
		for p, proto := range have {
			if proto == 76 && !need[p] && !slices.ContainsFunc(settling, func(w wantNet) bool { return w.Subnet == p }) {
				return fmt.Errorf("%s: stale route to %s via %s", h.Name, p, lab.VXLANDevice)
			}
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP.To4())
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}
