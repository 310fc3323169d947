package probe

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// pair links two fresh namespaces with a veth, 10.77.0.1/24 in a and
// 10.77.0.2/24 in b, and returns them.
func pair(t *testing.T) (a, b *testutil.Netns) {
	t.Helper()
	a, b = testutil.NewNetns(t, "frprobe"), testutil.NewNetns(t, "frprobe")
	a.Run(t, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb")
	a.Run(t, "ip", "link", "set", "vb", "netns", b.Name)
	a.Run(t, "ip", "addr", "add", "10.77.0.1/24", "dev", "va")
	a.Run(t, "ip", "link", "set", "va", "up")
	b.Run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", "vb")
	b.Run(t, "ip", "link", "set", "vb", "up")
	// A veth passes packets only once the kernel's link watch has
	// activated it (its qdisc noop replaced, its state UP), which a loaded
	// machine delays: a probe sent before that is lost, and the peer would
	// start out unreachable.
	for _, end := range []struct {
		ns  *testutil.Netns
		dev string
	}{{a, "va"}, {b, "vb"}} {
		testutil.Eventually(t, 10*time.Second, func() error {
			out := end.ns.Run(t, "ip", "-o", "link", "show", end.dev)
			if !strings.Contains(out, "state UP") || strings.Contains(out, "qdisc noop") {
				return fmt.Errorf("%s not active yet: %s", end.dev, out)
			}
			return nil
		})
	}
	return a, b
}

func listenIn(t *testing.T, ns *testutil.Netns) *icmp.PacketConn {
	t.Helper()
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) { c, err = Listen(); return err }); err != nil {
		t.Fatal(err)
	}
	return c
}

type changes struct {
	mu  sync.Mutex
	log []string
}

func (c *changes) add(s State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf("%s reachable=%v", s.Key, s.Reachable))
}

func (c *changes) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// A peer that answers is reachable; one whose address goes away is
// reported unreachable once, and reachable again once it is back.
func TestReachability(t *testing.T) {
	a, b := pair(t)
	var ch changes
	p := New(listenIn(t, a), Options{Interval: 200 * time.Millisecond, Misses: 3, OnChange: ch.add})
	p.SetTargets([]Target{
		{Key: "b", Host: "hostb", Addr: netip.MustParseAddr("10.77.0.2")},
		{Key: "gone", Addr: netip.MustParseAddr("10.77.0.9")},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	want := func(key string, reachable bool) func() error {
		return func() error {
			for _, s := range p.States() {
				if s.Key == key && s.Probed && s.Reachable == reachable {
					return nil
				}
			}
			return fmt.Errorf("%s not reachable=%v: %+v", key, reachable, p.States())
		}
	}
	testutil.Eventually(t, 5*time.Second, want("b", true))
	testutil.Eventually(t, 5*time.Second, want("gone", false))
	for _, s := range p.States() {
		if s.Key == "b" && (s.RTT <= 0 || s.Received == 0) {
			t.Fatalf("b answered without an RTT: %+v", s)
		}
	}
	b.Run(t, "ip", "addr", "del", "10.77.0.2/24", "dev", "vb")
	testutil.Eventually(t, 5*time.Second, want("b", false))
	b.Run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", "vb")
	testutil.Eventually(t, 5*time.Second, want("b", true))

	got := ch.get()
	wantLog := []string{"b reachable=true", "gone reachable=false", "b reachable=false", "b reachable=true"}
	if fmt.Sprint(got) != fmt.Sprint(wantLog) {
		t.Fatalf("changes = %q, want each change once: %q", got, wantLog)
	}
}

// Dropping a target forgets it; the probes spread over the period.
func TestTargetsAndGap(t *testing.T) {
	p := New(nil, Options{Interval: 2 * time.Second})
	var ts []Target
	for i := range 1000 {
		ts = append(ts, Target{Key: fmt.Sprint(i), Addr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})})
	}
	p.SetTargets(ts)
	if g := p.gap(); g != 2*time.Millisecond {
		t.Fatalf("gap at 1000 peers = %s, want 2ms", g)
	}
	p.SetTargets(ts[:1])
	if n := len(p.States()); n != 1 {
		t.Fatalf("%d states after dropping targets, want 1", n)
	}
	p.SetTargets(append(ts, ts...)) // 2000 keys collapse to 1000 distinct
	p.opts.MinGap = 5 * time.Millisecond
	if g := p.gap(); g != 5*time.Millisecond {
		t.Fatalf("gap = %s, want the 5ms floor", g)
	}
	if n := len(p.States()); n != 1000 {
		t.Fatalf("%d states from 2000 targets with 1000 keys, want 1000", n)
	}
}

// SetTargets keeps the state of kept peers when others come and go around
// them, resets a peer whose address changed, keeps the first of two targets
// with one key, and still matches an outstanding probe's answer to its peer.
func TestSetTargetsKeepsState(t *testing.T) {
	now := time.Unix(1000, 0)
	p := New(nil, Options{Interval: time.Second, Now: func() time.Time { return now }})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}) }
	p.SetTargets([]Target{{Key: "c", Addr: addr(3)}, {Key: "a", Addr: addr(1)}, {Key: "b", Addr: addr(2)}})
	// Probe a, b, c once (their probes are outstanding), then answer b's.
	p.mu.Lock()
	p.next = 0
	p.mu.Unlock()
	for range 3 {
		p.turn()
	}
	seqOf := func(key string) uint16 {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pe := range p.peers {
			if pe.Key == key {
				return pe.seq
			}
		}
		t.Fatalf("no peer %s", key)
		return 0
	}
	bSeq, cSeq := seqOf("b"), seqOf("c")
	p.answer(bSeq, addr(2))
	// New peers sort before and between the kept ones; a's address changes;
	// a second "b" target with another address is ignored.
	p.SetTargets([]Target{
		{Key: "b", Host: "hb", Addr: addr(2)}, {Key: "b", Addr: addr(9)},
		{Key: "0", Addr: addr(4)}, {Key: "bb", Addr: addr(5)},
		{Key: "c", Addr: addr(3)}, {Key: "a", Addr: addr(7)},
		{Key: "v6", Addr: netip.MustParseAddr("fd00::1")},
	})
	// c's probe was sent before the change: its answer still counts.
	p.answer(cSeq, addr(3))
	got := map[string]State{}
	var keys []string
	for _, s := range p.States() {
		got[s.Key] = s
		keys = append(keys, s.Key)
	}
	if fmt.Sprint(keys) != "[0 a b bb c]" {
		t.Fatalf("keys = %v, want [0 a b bb c]", keys)
	}
	if s := got["b"]; !s.Reachable || s.Sent != 1 || s.Received != 1 || s.Host != "hb" || s.Addr != addr(2) {
		t.Fatalf("b lost its state or took the second target: %+v", s)
	}
	if s := got["c"]; !s.Reachable || s.Received != 1 {
		t.Fatalf("c's outstanding probe was not matched after SetTargets: %+v", s)
	}
	if s := got["a"]; s.Sent != 0 || s.Addr != addr(7) {
		t.Fatalf("a changed address but kept its state: %+v", s)
	}
	if s := got["0"]; s.Sent != 0 || s.Probed {
		t.Fatalf("new peer 0 has state: %+v", s)
	}
	// An answer with a sequence number no peer holds, or from another
	// address, changes nothing.
	p.answer(bSeq+100, addr(2))
	p.answer(seqOf("a"), addr(1))
	for _, s := range p.States() {
		if s.Key != "b" && s.Key != "c" && s.Received != 0 {
			t.Fatalf("stray answer counted for %+v", s)
		}
	}
}

// Generation moves with the peer set and with each decision, and stays
// put for an unchanged set and for answers that only renew a round trip.
func TestGeneration(t *testing.T) {
	now := time.Unix(1000, 0)
	p := New(nil, Options{Interval: time.Second, Misses: 1, Now: func() time.Time { return now }})
	a := netip.MustParseAddr("10.3.0.1")
	ts := []Target{{Key: "a", Host: "ha", Addr: a}}
	g0 := p.Generation()
	p.SetTargets(ts)
	g1 := p.Generation()
	if g1 == g0 {
		t.Fatal("a new peer left the generation as it was")
	}
	p.SetTargets(ts)
	if g := p.Generation(); g != g1 {
		t.Fatalf("the same targets again moved the generation %d -> %d", g1, g)
	}
	answer := func() {
		p.mu.Lock()
		seq := p.peers[0].seq
		p.mu.Unlock()
		now = now.Add(time.Millisecond)
		p.answer(seq, a)
	}
	p.turn()
	answer() // first decision: reachable
	g2 := p.Generation()
	if g2 == g1 {
		t.Fatal("the first decision left the generation as it was")
	}
	p.turn()
	answer() // reachable again, another RTT only
	if g := p.Generation(); g != g2 {
		t.Fatalf("a renewed RTT moved the generation %d -> %d", g2, g)
	}
	p.turn()
	p.turn() // the probe before was lost: unreachable (Misses 1)
	g3 := p.Generation()
	if g3 == g2 {
		t.Fatal("becoming unreachable left the generation as it was")
	}
	p.SetTargets([]Target{{Key: "a", Host: "renamed", Addr: a}})
	if g := p.Generation(); g == g3 {
		t.Fatal("a renamed peer left the generation as it was")
	}
}
