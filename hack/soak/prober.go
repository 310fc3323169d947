package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// PingEvery is the all-pairs ping period.
const PingEvery = 100 * time.Millisecond

// recorder holds every sample of the all-pairs pings and the intervals in
// which a source container was not running.
type recorder struct {
	mu      sync.Mutex // guards samples and down
	samples []Sample
	down    map[int][]Interval
}

func newRecorder() *recorder { return &recorder{down: map[int][]Interval{}} }

func (r *recorder) add(s Sample) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	return len(r.samples) - 1
}

func (r *recorder) answer(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[i].Answered = true
}

func (r *recorder) setDown(host int, down bool, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ivs := r.down[host]
	open := len(ivs) > 0 && ivs[len(ivs)-1].To.IsZero()
	switch {
	case down && !open:
		r.down[host] = append(ivs, Interval{From: at})
	case !down && open:
		ivs[len(ivs)-1].To = at
	}
}

// snapshot copies the samples and down intervals.
func (r *recorder) snapshot() ([]Sample, map[int][]Interval) {
	r.mu.Lock()
	defer r.mu.Unlock()
	down := map[int][]Interval{}
	for h, ivs := range r.down {
		down[h] = append([]Interval(nil), ivs...)
	}
	return append([]Sample(nil), r.samples...), down
}

// pingsUp reports whether every pair's last `run` settled samples sent
// after since are all answered, and the earliest send time, per pair, of
// that run of answers (the latest over pairs: when pings were back).
func (r *recorder) pingsUp(pairs []Pair, since time.Time, run int, now time.Time) (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var back time.Time
	for _, p := range pairs {
		n, first := 0, time.Time{}
		for i := len(r.samples) - 1; i >= 0 && n < run; i-- {
			s := r.samples[i]
			if s.At.Before(since) {
				break
			}
			if s.Pair != p || (!s.Answered && now.Sub(s.At) < Settle) {
				continue
			}
			if !s.Answered {
				break
			}
			n++
			first = s.At
		}
		if n < run {
			return time.Time{}, fmt.Errorf("pings h%d -> h%d not answering yet", p.From, p.To)
		}
		if first.After(back) {
			back = first
		}
	}
	return back, nil
}

// target is a peer container of a prober.
type target struct {
	Host int
	IP   netip.Addr
}

// prober pings every peer container from one source container, every
// PingEvery, through a raw ICMP socket made inside the container's network
// namespace (found by the container's pid; a new one after a restart).
// Every echo carries a new ICMP identifier: each is a new conntrack flow,
// so firewall drift drops it as it would a new connection (a constant
// identifier would ride one ESTABLISHED entry through a missing ACCEPT).
type prober struct {
	host      *lab.Host
	container string
	targets   []target
	rec       *recorder
	idBase    uint16

	mu   sync.Mutex           // guards out
	out  map[outKey]outSample // echo requests awaiting their reply
	seen time.Time
}

type outKey struct {
	ip  netip.Addr
	seq uint16
}

type outSample struct {
	idx int
	id  uint16
	at  time.Time
}

func newProber(h *lab.Host, container string, targets []target, rec *recorder) *prober {
	return &prober{host: h, container: container, targets: targets, rec: rec,
		idBase: uint16(h.Index) << 12, out: map[outKey]outSample{}}
}

// run pings until ctx ends.
func (p *prober) run(ctx context.Context) {
	var n uint16
	for ctx.Err() == nil {
		conn, pid, err := p.attach(ctx)
		if err != nil {
			p.rec.setDown(p.host.Index, true, time.Now())
			if !sleepCtx(ctx, 500*time.Millisecond) {
				return
			}
			continue
		}
		p.rec.setDown(p.host.Index, false, time.Now())
		n = p.pingWith(ctx, conn, pid, n)
		p.rec.setDown(p.host.Index, true, time.Now())
	}
}

// attach finds the container's process and makes a raw ICMP socket in its
// network namespace.
func (p *prober) attach(ctx context.Context) (*icmp.PacketConn, int, error) {
	out, err := p.host.Docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Pid}}", p.container)
	if err != nil {
		return nil, 0, err
	}
	running, pidText, _ := strings.Cut(out, " ")
	pid, err := strconv.Atoi(pidText)
	if running != "true" || err != nil || pid == 0 {
		return nil, 0, fmt.Errorf("container %s not running (%q)", p.container, out)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, 0, fmt.Errorf("netns of %d: %w", pid, err)
	}
	defer ns.Close()
	var conn *icmp.PacketConn
	err = inNetns(ns, func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("icmp socket in %s: %w", p.container, err)
	}
	return conn, pid, nil
}

// pingWith sends on conn until ctx ends or the container's process is
// gone; n is the running echo counter, returned for the next socket.
func (p *prober) pingWith(ctx context.Context, conn *icmp.PacketConn, pid int, n uint16) uint16 {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() { _ = conn.Close() }() // before wg.Wait: ends the reader
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.read(conn)
	}()
	tick := time.NewTicker(PingEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return n // the container stopped; a restarted one has a new namespace
		}
		now := time.Now()
		p.expire(now)
		for _, t := range p.targets {
			n++
			id := p.idBase + n%4096
			idx := p.rec.add(Sample{Pair: Pair{From: p.host.Index, To: t.Host}, At: now})
			p.mu.Lock()
			p.out[outKey{t.IP, n}] = outSample{idx: idx, id: id, at: now}
			p.mu.Unlock()
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(id), Seq: int(n), Data: []byte("frlab-soak")}}
			b, err := msg.Marshal(nil)
			if err == nil {
				_, _ = conn.WriteTo(b, &net.IPAddr{IP: t.IP.AsSlice()}) // a failed send is a lost ping
			}
		}
	}
}

// expire forgets requests older than Settle: a reply after that is late
// enough to count as lost.
func (p *prober) expire(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.seen) < time.Second {
		return
	}
	p.seen = now
	for k, o := range p.out {
		if now.Sub(o.at) > Settle {
			delete(p.out, k)
		}
	}
}

func (p *prober) read(conn *icmp.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		ipa, ok2 := from.(*net.IPAddr)
		if !ok || !ok2 {
			continue
		}
		addr, _ := netip.AddrFromSlice(ipa.IP.To4())
		k := outKey{addr, uint16(echo.Seq)}
		p.mu.Lock()
		o, found := p.out[k]
		if found && o.id == uint16(echo.ID) {
			delete(p.out, k)
		} else {
			found = false
		}
		p.mu.Unlock()
		if found {
			p.rec.answer(o.idx)
		}
	}
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
