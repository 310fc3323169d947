// Command probebench measures the peer prober (pkg/probe) at scale: one
// ICMP socket probing N simulated peers for a while, then one peer dying.
// It prints packets per second, the CPU the prober used, and how long it
// took to report the dead peer unreachable and, once back, reachable.
//
// The peers are N /32 addresses on the loopback of a second network
// namespace, reached through one veth and one gateway route, so the kernel
// answers every echo and only the prober's own cost is measured. Both
// namespaces (frprobe-bench-a, -b) are removed at exit. Run as root:
//
//	go run ./hack/probebench -peers 1000 -interval 2s -for 20s
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"

	"github.com/flannel-registrar/flannel-registrar/pkg/probe"
)

const nsA, nsB = "frprobe-bench-a", "frprobe-bench-b"

func main() {
	peers := flag.Int("peers", 1000, "simulated peers")
	interval := flag.Duration("interval", 2*time.Second, "probe period of each peer (PROBE_INTERVAL)")
	dur := flag.Duration("for", 20*time.Second, "how long to measure the steady state")
	flag.Parse()
	if err := run(*peers, *interval, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "probebench:", err)
		cleanup()
		os.Exit(1)
	}
	cleanup()
}

func sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func cleanup() {
	_ = exec.Command("ip", "netns", "del", nsA).Run()
	_ = exec.Command("ip", "netns", "del", nsB).Run()
}

func peerAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}) }

func setup(n int) error {
	cleanup()
	for _, c := range [][]string{
		{"ip", "netns", "add", nsA}, {"ip", "netns", "add", nsB},
		{"ip", "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB},
		{"ip", "-n", nsA, "addr", "add", "10.77.0.1/24", "dev", "va"},
		{"ip", "-n", nsA, "link", "set", "va", "up"},
		{"ip", "-n", nsA, "link", "set", "lo", "up"},
		{"ip", "-n", nsA, "route", "add", "10.200.0.0/16", "via", "10.77.0.2"},
		{"ip", "-n", nsB, "addr", "add", "10.77.0.2/24", "dev", "vb"},
		{"ip", "-n", nsB, "link", "set", "vb", "up"},
		{"ip", "-n", nsB, "link", "set", "lo", "up"},
	} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, "addr add %s/32 dev lo\n", peerAddr(i))
	}
	cmd := exec.Command("ip", "-n", nsB, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("add %d addresses: %w: %s", n, err, out)
	}
	return nil
}

func listenIn(name string) (*icmp.PacketConn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return nil, err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
	}()
	return probe.Listen()
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(n int, interval, dur time.Duration) error {
	if err := setup(n); err != nil {
		return err
	}
	conn, err := listenIn(nsA)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	changes := map[string][]time.Time{} // key -> times of changes
	states := map[string]bool{}
	p := probe.New(conn, probe.Options{Interval: interval, OnChange: func(s probe.State) {
		mu.Lock()
		defer mu.Unlock()
		changes[s.Key] = append(changes[s.Key], time.Now())
		states[s.Key] = s.Reachable
	}})
	ts := make([]probe.Target, n)
	for i := range n {
		ts[i] = probe.Target{Key: peerAddr(i).String(), Addr: peerAddr(i)}
	}
	p.SetTargets(ts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	// Warm up one period, so every peer was decided once.
	<-time.After(interval + interval/2)
	sent0, recv0 := totals(p)
	c0, t0 := cpu(), time.Now()
	<-time.After(dur) // the measured period
	sent1, recv1 := totals(p)
	c1, t1 := cpu(), time.Now()
	wall := t1.Sub(t0).Seconds()

	victim := peerAddr(n / 2)
	mu.Lock()
	before := len(changes[victim.String()])
	mu.Unlock()
	killed := time.Now()
	if err := sh("ip", "-n", nsB, "addr", "del", victim.String()+"/32", "dev", "lo"); err != nil {
		return err
	}
	down, err := waitChange(&mu, changes, states, victim.String(), before+1, false, 60*time.Second)
	if err != nil {
		return err
	}
	revived := time.Now()
	if err := sh("ip", "-n", nsB, "addr", "add", victim.String()+"/32", "dev", "lo"); err != nil {
		return err
	}
	up, err := waitChange(&mu, changes, states, victim.String(), before+2, true, 60*time.Second)
	if err != nil {
		return err
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	fmt.Printf("peers\tinterval\tprobes/s\treplies/s\tcpu\tcpu per 1k probes\tdead detected\tback detected\n")
	pps := float64(sent1-sent0) / wall
	fmt.Printf("%d\t%s\t%.0f\t%.0f\t%.2f%% of one core\t%.1f ms\t%s\t%s\n", n, interval, pps,
		float64(recv1-recv0)/wall, 100*(c1-c0).Seconds()/wall,
		1000*(c1-c0).Seconds()/float64(sent1-sent0)*1000, down.Sub(killed).Round(10*time.Millisecond), up.Sub(revived).Round(10*time.Millisecond))
	return nil
}

func totals(p *probe.Prober) (sent, recv uint64) {
	for _, s := range p.States() {
		sent += s.Sent
		recv += s.Received
	}
	return sent, recv
}

func waitChange(mu *sync.Mutex, changes map[string][]time.Time, states map[string]bool, key string, n int, want bool, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		mu.Lock()
		cs, st := changes[key], states[key]
		mu.Unlock()
		if len(cs) >= n && st == want {
			return cs[n-1], nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("peer %s not reported reachable=%v within %s", key, want, timeout)
		}
	}
	return time.Time{}, nil
}
