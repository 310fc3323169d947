package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// hardLimit is how long the soak waits for full connectivity before it
// gives up on the lab (the bound is what it must meet to pass).
func (s *soak) hardLimit() time.Duration { return max(4*s.o.bound, 2*time.Minute) }

// soak is one run on one lab.
type soak struct {
	o     options
	l     *lab.Lab
	nets  *nets
	rec   *recorder
	check *checker
	pairs []Pair
	churn *churn
	stats churnStats

	windows  []Window // owned by run's goroutine
	failures []string
}

func (s *soak) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.failures = append(s.failures, msg)
	progress("FAIL: %s", msg)
}

func (s *soak) run(ctx context.Context) error {
	if err := s.createBase(ctx); err != nil {
		return err
	}
	c, err := newChecker(s.l, s.nets)
	if err != nil {
		return err
	}
	defer c.close()
	s.check = c
	progress("waiting for the base networks to be routed and registered")
	if err := poll.Until(ctx, time.Minute, 200*time.Millisecond, func() error { return c.check(ctx) }); err != nil {
		return fmt.Errorf("initial convergence: %w", err)
	}

	probeCtx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopProbes()
	s.startProbers(probeCtx, &wg)
	progress("waiting for all-pairs pings")
	t0 := time.Now()
	if err := poll.Until(ctx, time.Minute, 100*time.Millisecond, func() error {
		_, err := s.rec.pingsUp(s.pairs, t0, 5, time.Now())
		return err
	}); err != nil {
		return fmt.Errorf("initial pings: %w", err)
	}
	sleepCtx(ctx, 5*time.Second) // a quiet baseline: the (no fault) row
	startUsage := measureUsage(ctx, s.l)

	s.churn = &churn{l: s.l, nets: s.nets, stats: &s.stats, period: s.o.churnEvery}
	half := s.o.duration / 2
	progress("first half: %s of faults and churn", half)
	if err := s.half(ctx, half); err != nil {
		return s.finish(err, startUsage, nil, nil)
	}
	midUsage := measureUsage(ctx, s.l)
	progress("second half: the same faults and churn again")
	if err := s.half(ctx, half); err != nil {
		return s.finish(err, startUsage, midUsage, nil)
	}
	endUsage := measureUsage(ctx, s.l)

	progress("removing the churn networks; final check")
	if err := s.churn.removeAll(ctx); err != nil {
		s.fail("remove churn networks: %v", err)
	}
	sleepCtx(ctx, SettleNet) // so the final check judges the removed ones too
	if _, err := s.waitReady(ctx, time.Now()); err != nil {
		s.fail("final convergence: %v", err)
	}
	return s.finish(nil, startUsage, midUsage, endUsage)
}

// createBase makes soak<i> (198.19.<i>.0/24) with container soak<i>-c at
// .10 on host i: the all-pairs ping endpoints (a fixed address survives a
// dockerd restart).
func (s *soak) createBase(ctx context.Context) error {
	for _, h := range s.l.Hosts {
		name := fmt.Sprintf("soak%d", h.Index)
		subnet := netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", h.Index))
		if err := h.CreateNetwork(ctx, name, subnet.String()); err != nil {
			return err
		}
		ip := fmt.Sprintf("198.19.%d.10", h.Index)
		if _, err := h.RunContainer(ctx, name+"-c", name, "--ip", ip); err != nil {
			return err
		}
		s.nets.add(&liveNet{wantNet: wantNet{Host: h.Name, Name: name, Subnet: subnet}, host: h, container: name + "-c", changed: time.Now()})
	}
	return nil
}

func (s *soak) startProbers(ctx context.Context, wg *sync.WaitGroup) {
	for _, h := range s.l.Hosts {
		var ts []target
		for _, o := range s.l.Hosts {
			if o == h {
				continue
			}
			ts = append(ts, target{Host: o.Index, IP: netip.MustParseAddr(fmt.Sprintf("198.19.%d.10", o.Index))})
			s.pairs = append(s.pairs, Pair{From: h.Index, To: o.Index})
		}
		p := newProber(h, fmt.Sprintf("soak%d-c", h.Index), ts, s.rec)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx)
		}()
	}
}

// half runs faults from a fresh schedule (the same seed each half) with
// the churn (also reseeded) until d has passed.
func (s *soak) half(ctx context.Context, d time.Duration) error {
	sched := NewSchedule(s.o.seed, len(s.l.Hosts), etcdMemberCount(s.l))
	churnCtx, stopChurn := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.churn.run(churnCtx, s.o.seed+1)
	}()
	defer wg.Wait()
	defer stopChurn()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.oneFault(ctx, sched.Next()); err != nil {
			return err
		}
		sleepCtx(ctx, s.o.quiet)
	}
	return nil
}

// oneFault injects f, waits for full connectivity and records the window.
// An error means the lab did not recover at all: the soak stops.
func (s *soak) oneFault(ctx context.Context, f Fault) error {
	w := Window{Fault: f, Start: time.Now()}
	progress("fault %d: %s", len(s.windows)+1, f)
	w.Err = s.inject(ctx, f)
	w.End = time.Now()
	if w.Err != nil {
		s.fail("inject %s: %v", f, w.Err)
	}
	ready, err := s.waitReady(ctx, w.End)
	w.Ready = ready
	if err != nil {
		w.Ready = -1
	}
	s.windows = append(s.windows, w)
	if err != nil {
		s.fail("%s: no full connectivity within %s: %v", f, s.hardLimit(), err)
		return fmt.Errorf("lab did not recover from %s: %w", f, err)
	}
	if ready > s.o.bound {
		s.fail("%s: full connectivity %s after the fault ended (bound %s)", f, ready.Round(time.Millisecond), s.o.bound)
	}
	progress("  ready %s after the fault ended (injection took %s)", ready.Round(time.Millisecond), w.End.Sub(w.Start).Round(time.Millisecond))
	return nil
}

// waitReady polls until routes, records and pings are all back, and
// returns how long after from they were: the later of the first of an
// unbroken run of answered pings (latest over pairs) and the start of an
// unbroken run of passing route and record checks.
func (s *soak) waitReady(ctx context.Context, from time.Time) (time.Duration, error) {
	var okSince, lastFail time.Time
	var ready time.Duration
	var lastErr error
	err := poll.Until(ctx, s.hardLimit(), 100*time.Millisecond, func() error {
		now := time.Now()
		if err := s.check.check(ctx); err != nil {
			okSince = time.Time{}
			lastErr, lastFail = err, now
			return err
		}
		if okSince.IsZero() {
			okSince = now
		}
		back, err := s.rec.pingsUp(s.pairs, from, 3, now)
		if err != nil {
			return err
		}
		ready = max(back.Sub(from), okSince.Sub(from), 0)
		return nil
	})
	if err == nil && lastErr != nil && ready > 2*time.Second {
		// Say what kept it from converging, for the report.
		progress("  slow: the last failing check (%s after the fault ended): %v", lastFail.Sub(from).Round(time.Millisecond), lastErr)
	}
	return ready, err
}

// finish prints the tables and decides the exit status.
func (s *soak) finish(runErr error, start, mid, end []Usage) error {
	now := time.Now()
	samples, down := s.rec.snapshot()
	rows := Attribute(samples, s.windows, down, now)
	fmt.Printf("\nseed %d, %d faults, %d all-pairs pings every %s (lost: sent, no answer within %s; ctr↓: the source or target container was not running, ±%s; lost after: sent after the fault ended; ready: from the fault's end to full connectivity):\n\n",
		s.o.seed, len(s.windows), len(samples), PingEvery, Settle, DownSlack)
	fmt.Print(RenderTable(rows))

	s.stats.mu.Lock()
	routed := slices.Clone(s.stats.routed)
	fmt.Printf("\nchurn: %d networks created, %d removed, %d docker errors (a dockerd restarting), %d not routed within 1 min",
		s.stats.created, s.stats.removed, s.stats.errors, s.stats.notRoute)
	if s.stats.lastErr != nil {
		fmt.Printf(" (last error: %v)", firstLine(s.stats.lastErr.Error()))
	}
	s.stats.mu.Unlock()
	if len(routed) > 0 {
		slices.Sort(routed)
		fmt.Printf("; routed on every other host after the create: median %s, worst %s", msText(routed[len(routed)/2]), msText(routed[len(routed)-1]))
	}
	fmt.Println()

	var errs []error
	if runErr != nil {
		errs = append(errs, runErr)
	}
	if end != nil {
		missing, extra, err := s.finalRecords()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("final record check: %w", err))
		default:
			fmt.Printf("records lost: %d, extra: %d\n", len(missing), len(extra))
			for _, m := range append(missing, extra...) {
				fmt.Println("  ", m)
			}
			if len(missing)+len(extra) > 0 {
				errs = append(errs, fmt.Errorf("%d records lost, %d extra", len(missing), len(extra)))
			}
		}
	}
	fmt.Printf("\nregistrars (h%d is never SIGKILLed; a restarted registrar is not judged):\n\n", ObservedHost)
	fmt.Print(RenderUsage(start, mid, end))
	if mid != nil && end != nil {
		for _, b := range CheckGrowth(mid, end) {
			s.fail("%s", b)
		}
	}
	if len(s.failures) > 0 {
		fmt.Printf("\n%d failures:\n  %s\n", len(s.failures), strings.Join(s.failures, "\n  "))
		errs = append(errs, fmt.Errorf("%d failures", len(s.failures)))
	}
	return errors.Join(errs...)
}

func (s *soak) finalRecords() (missing, extra []string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	facts, _, err := s.check.facts()
	if err != nil {
		return nil, nil, err
	}
	want, settling := s.nets.wanted(time.Now())
	return s.check.records(ctx, want, settling, facts)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
