// Package probe checks that each peer is reachable through the overlay: it
// sends an ICMP echo to the peer's VXLAN device address (flannel gives
// flannel.1 its subnet's network address, e.g. 10.5.35.0/32, and routes
// <subnet> via that address onlink), so a reply proves the whole path a
// container packet takes: our route, neighbour and FDB entry, the underlay
// in both directions with UDP 8472 open, the peer's kernel decapsulating,
// and its route back. ICMP needs nothing from the peer's registrar (flanneld
// hosts without one answer too) and no port of ours open in the firewall.
//
// Cost is bounded: one raw socket for every peer, one goroutine sending and
// one reading; the probes of one period are spread evenly over it, and never
// closer together than MinGap, so 1,000 peers at a 2 s period are 500 small
// packets a second, sent one every 2 ms. A peer is unreachable after Misses
// probes in a row go unanswered, reachable again at the first answer; each
// change is reported once through OnChange.
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Target is one peer to probe.
type Target struct {
	Key  string     // stable identity, e.g. the peer's PublicIP
	Host string     // for reports; may be empty
	Addr netip.Addr // the peer's VXLAN device address
}

// State is what the prober knows about one peer.
type State struct {
	Target
	Probed    bool // decided at least once (reachable, or Misses probes lost)
	Reachable bool
	RTT       time.Duration // of the last answer
	LastReply time.Time
	Misses    int // probes lost in a row
	Sent      uint64
	Received  uint64
}

// Options tune a prober. Zero values take defaults.
type Options struct {
	Interval time.Duration // each peer is probed once per Interval; default 2s
	Misses   int           // lost probes in a row before a peer is unreachable; default 3
	MinGap   time.Duration // smallest gap between two probes; default 1ms (at most 1,000/s)
	// OnChange is called once per change of a peer's reachability (first
	// decision included), outside the prober's lock.
	OnChange func(s State)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

type peer struct {
	State
	seq      uint16 // of the outstanding probe
	sentAt   time.Time
	answered bool // the outstanding probe was answered
}

// Prober probes a set of targets.
type Prober struct {
	conn *icmp.PacketConn
	id   int
	opts Options

	mu sync.Mutex // guards peers, next, seq, bySeq
	// peers are sorted by key and held by value: at 10,000 peers a map of
	// pointers, a key order and a map from sequence number to key were
	// 2.5 MB of the daemon's peak heap, this slice is half of it.
	peers []peer
	next  int
	seq   uint16
	bySeq map[uint16]int32 // outstanding probe's sequence number -> index in peers
	// gen counts the changes of the peer set and of any peer's decision
	// (not of round-trip times): a reader can tell that nothing it shows
	// changed without copying every state.
	gen uint64
}

// Listen opens the raw ICMP socket (needs CAP_NET_RAW) in the calling
// thread's network namespace.
func Listen() (*icmp.PacketConn, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("open ICMP socket: %w", err)
	}
	return c, nil
}

// New returns a prober sending on conn, which it owns from now on.
func New(conn *icmp.PacketConn, opts Options) *Prober {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Misses <= 0 {
		opts.Misses = 3
	}
	if opts.MinGap <= 0 {
		opts.MinGap = time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// A raw socket sees every echo reply of the namespace: the identifier
	// tells ours apart from a ping an operator runs.
	return &Prober{conn: conn, id: os.Getpid() & 0xffff, opts: opts, bySeq: map[uint16]int32{}}
}

// SetTargets replaces the set of peers; the state of peers kept is kept.
// Of two targets with one key the first counts; targets that are not IPv4
// are ignored.
func (p *Prober) SetTargets(ts []Target) {
	// Sorted by key through an index, so the caller's slice is untouched
	// and the first of equal keys stays first.
	idx := make([]int32, 0, len(ts))
	for i, t := range ts {
		if t.Addr.Is4() {
			idx = append(idx, int32(i))
		}
	}
	slices.SortStableFunc(idx, func(a, b int32) int { return strings.Compare(ts[a].Key, ts[b].Key) })
	p.mu.Lock()
	defer p.mu.Unlock()
	peers := make([]peer, 0, len(idx))
	same := true // every target kept as it was
	old := 0     // the old peers are sorted too: one merge finds the kept ones
	for _, i := range idx {
		t := ts[i]
		if n := len(peers); n > 0 && peers[n-1].Key == t.Key {
			continue
		}
		for old < len(p.peers) && p.peers[old].Key < t.Key {
			old++
		}
		if old < len(p.peers) && p.peers[old].Key == t.Key && p.peers[old].Addr == t.Addr {
			pe := p.peers[old]
			if pe.Host != t.Host {
				pe.Host = t.Host
				same = false
			}
			peers = append(peers, pe)
			continue
		}
		same = false
		peers = append(peers, peer{State: State{Target: t}, answered: true})
	}
	if !same || len(peers) != len(p.peers) {
		p.gen++
	}
	clear(p.bySeq)
	for i := range peers {
		if !peers[i].answered {
			p.bySeq[peers[i].seq] = int32(i)
		}
	}
	p.peers = peers
	if p.next >= len(peers) {
		p.next = 0
	}
}

// States returns every peer's state, sorted by key.
func (p *Prober) States() []State {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]State, 0, len(p.peers))
	for i := range p.peers {
		out = append(out, p.peers[i].State)
	}
	return out
}

// Generation changes whenever the peer set or a peer's decision (Probed,
// Reachable) changes; round-trip times alone leave it as it is.
func (p *Prober) Generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// gap is the time between two probes: the period spread over the peers.
func (p *Prober) gap() time.Duration {
	p.mu.Lock()
	n := len(p.peers)
	p.mu.Unlock()
	if n == 0 {
		return p.opts.Interval
	}
	return max(p.opts.Interval/time.Duration(n), p.opts.MinGap)
}

// Run probes until ctx ends, then closes the socket.
func (p *Prober) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() { errc <- p.read() })
	defer func() {
		_ = p.conn.Close() // unblocks read
		wg.Wait()
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-t.C:
		}
		// A send that fails (no route while the device is being recreated)
		// is a lost probe like any other: the next turn counts it.
		_ = p.sendNext()
		// Scheduled from the previous slot, not from now, so timer latency
		// does not stretch the period; after a stall it restarts from now.
		next = next.Add(p.gap())
		if now := time.Now(); next.Before(now.Add(-p.opts.Interval)) {
			next = now
		}
		t.Reset(time.Until(next))
	}
}

// sendNext probes the next peer in turn.
func (p *Prober) sendNext() error {
	dst, seq, ok := p.turn()
	if !ok {
		return nil
	}
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: int(seq), Data: []byte("flannel-registrar")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("encode echo: %w", err)
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo to %s: %w", dst, err)
	}
	return nil
}

// turn moves to the next peer in turn, first deciding on its previous
// probe (a probe unanswered by the time the next one is due is lost), and
// returns the address and sequence number of its next probe; false when
// there are no peers.
func (p *Prober) turn() (dst netip.Addr, seq uint16, ok bool) {
	now := p.opts.Now()
	var changed []State
	p.mu.Lock()
	if len(p.peers) == 0 {
		p.mu.Unlock()
		return netip.Addr{}, 0, false
	}
	i := p.next
	pe := &p.peers[i]
	p.next = (p.next + 1) % len(p.peers)
	if !pe.answered {
		pe.Misses++
		if pe.Misses >= p.opts.Misses && (pe.Reachable || !pe.Probed) {
			pe.Reachable, pe.Probed = false, true
			p.gen++
			changed = append(changed, pe.State)
		}
	}
	if j, found := p.bySeq[pe.seq]; found && int(j) == i {
		delete(p.bySeq, pe.seq)
	}
	p.seq++
	pe.seq, pe.sentAt, pe.answered = p.seq, now, false
	pe.Sent++
	p.bySeq[pe.seq] = int32(i)
	dst, seq = pe.Addr, pe.seq
	p.mu.Unlock()
	p.notify(changed)
	return dst, seq, true
}

func (p *Prober) read() error {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read ICMP: %w", err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || echo.ID != p.id {
			continue
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(ip.IP)
		p.answer(uint16(echo.Seq), src.Unmap())
	}
}

func (p *Prober) answer(seq uint16, src netip.Addr) {
	now := p.opts.Now()
	var changed []State
	p.mu.Lock()
	i, ok := p.bySeq[seq]
	if !ok || int(i) >= len(p.peers) {
		p.mu.Unlock()
		return
	}
	pe := &p.peers[i]
	if pe.Addr != src || pe.seq != seq || pe.answered {
		p.mu.Unlock()
		return
	}
	pe.answered = true
	pe.Misses = 0
	pe.Received++
	pe.RTT, pe.LastReply = now.Sub(pe.sentAt), now
	if !pe.Reachable || !pe.Probed {
		pe.Reachable, pe.Probed = true, true
		p.gen++
		changed = append(changed, pe.State)
	}
	p.mu.Unlock()
	p.notify(changed)
}

func (p *Prober) notify(states []State) {
	if p.opts.OnChange == nil {
		return
	}
	for _, s := range states {
		p.opts.OnChange(s)
	}
}
