package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// Firewall drift (issue 12 item 5): a jump of ours deleted by hand on a host
// comes back within about a second (nf_tables notifications with the lab's
// iptables-nft), not at the next resync (INTERVAL), with pings every 100 ms
// h1 -> h2 across it; after the nat jump's repair the receiver sees the
// sender's container address again.
func TestFirewallDriftRepaired(t *testing.T) {
	needLab(t)
	ctx := context.Background()
	from, to := base[1], base[2]
	h := to.Host
	if v, err := h.Run(ctx, "iptables", "-V"); err == nil {
		t.Logf("%s: %s", h.Name, v)
	}
	eventually(t, 60*time.Second, "h1 <-> h2 before the faults", func() error {
		return allPairs(ctx, []*testNet{from, to})
	})
	for _, f := range []struct {
		name       string
		table      string
		parent     string
		chain      string
		source     *testNet // reach(source, …) checks the source address afterwards
		sourceDest *testNet
	}{
		{"DOCKER-USER jump deleted", "filter", "DOCKER-USER", "FLANNEL-REGISTRAR-FWD", from, to},
		{"POSTROUTING jump deleted", "nat", "POSTROUTING", "FLANNEL-REGISTRAR-NAT", to, from},
	} {
		t.Run(strings.ReplaceAll(f.name, " ", "_"), func(t *testing.T) {
			first := fmt.Sprintf("-A %s -j %s", f.parent, f.chain)
			jumpFirst := func() error {
				out, err := h.Run(ctx, "iptables", "-w", "-t", f.table, "-S", f.parent)
				if err != nil {
					return fmt.Errorf("iptables -t %s -S %s: %w: %s", f.table, f.parent, err, out)
				}
				var rules []string
				for _, r := range splitLines(out) {
					if strings.HasPrefix(r, "-A ") {
						rules = append(rules, r)
					}
				}
				if len(rules) == 0 || rules[0] != first {
					return fmt.Errorf("%s %s: want %q first, have %q", h.Name, f.parent, first, rules)
				}
				return nil
			}
			if err := jumpFirst(); err != nil {
				t.Fatalf("before the fault: %v", err)
			}
			logAt := logSize(h)
			p, err := startPingerEvery(from, to.IP, 6*time.Second, "0.1")
			if err != nil {
				t.Fatal(err)
			}
			wait(t, time.Second) // a stretch of traffic before the fault
			if out, err := h.Run(ctx, "iptables", "-w", "-t", f.table, "-D", f.parent, "-j", f.chain); err != nil {
				t.Fatalf("delete the jump by hand: %v: %s", err, out)
			}
			deleted := time.Now()
			perr := poll.Until(ctx, 5*time.Second, 5*time.Millisecond, jumpFirst)
			repair := time.Since(deleted)
			sent, got, werr := p.wait()
			if perr != nil {
				t.Fatalf("%s: jump not restored within 5 s: %v", f.name, perr)
			}
			if werr != nil {
				t.Fatal(werr)
			}
			t.Logf("%s on %s: restored in %s; pings h1->h2 every 100 ms: %d sent, %d lost", f.name, h.Name,
				repair.Round(time.Millisecond), sent, sent-got)
			if log := registrarLogSince(h, logAt); !strings.Contains(log, "firewall:rule-del "+f.table+"/"+f.parent) {
				t.Errorf("no reconcile triggered by the firewall watcher in %s's log:\n%s", h.Name, lastLines(log, 10))
			}
			eventually(t, 10*time.Second, "traffic with the source address kept", func() error {
				return reach(ctx, f.source, f.sourceDest)
			})
		})
	}
}

// startPingerEvery pings ip from from's container every interval (ping -i)
// for d.
func startPingerEvery(from *testNet, ip string, d time.Duration, interval string) (*pinger, error) {
	p := &pinger{}
	p.cmd = exec.Command("/usr/bin/docker", "-H", from.Host.DockerHost(), "exec", from.Container,
		"ping", "-q", "-i", interval, "-w", strconv.Itoa(int(d.Seconds())), ip)
	p.cmd.Env = append(os.Environ(), "DOCKER_API_VERSION=1.41")
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pinger: %w", err)
	}
	return p, nil
}

func lastLines(s string, n int) string {
	l := splitLines(s)
	return joinLines(l[max(0, len(l)-n):])
}
