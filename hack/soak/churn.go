package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// churnLive is how many churn networks exist at most: each create beyond
// it removes the oldest.
const churnLive = 3

// churnStats sums what the churn did.
type churnStats struct {
	mu       sync.Mutex // guards the rest
	created  int
	removed  int
	errors   int
	lastErr  error
	routed   []time.Duration // create returned -> routed on every other host
	notRoute int             // not routed within the churn's wait
}

func (s *churnStats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors++
	s.lastErr = err
}

// churn creates a network (with a container) on a random host every
// period, waits until the other hosts route it, and removes the oldest
// beyond churnLive. Docker errors (a dockerd restarting) are counted and
// retried at the next period.
type churn struct {
	l      *lab.Lab
	nets   *nets
	stats  *churnStats
	period time.Duration
	mine   []*liveNet // oldest first; owned by run
	// maybe holds networks whose create failed: dockerd may have made
	// them all the same (a restart in the middle of the request), so they
	// are removed like the others; owned by run.
	maybe []*liveNet
}

// createTimeout bounds one docker network create. The create runs to its
// end even when the churn is stopped: a docker CLI killed in the middle of
// the request may leave the network made behind the churn's back.
const createTimeout = 30 * time.Second

func (c *churn) run(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a2))
	tick := time.NewTicker(c.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c.removeExtra(ctx)
		if err := c.createOne(ctx, c.l.Hosts[rng.IntN(len(c.l.Hosts))]); err != nil && ctx.Err() == nil {
			c.stats.fail(err)
		}
	}
}

func (c *churn) createOne(ctx context.Context, h *lab.Host) error {
	c.nets.mu.Lock()
	k := c.nets.created
	c.nets.created++
	c.nets.mu.Unlock()
	name := fmt.Sprintf("churn%d", k)
	subnet := netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", 100+k%100))
	n := &liveNet{wantNet: wantNet{Host: h.Name, Name: name, Subnet: subnet}, host: h, container: name + "-c"}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	err := h.CreateNetwork(cctx, name, subnet.String())
	cancel()
	if err != nil {
		c.maybe = append(c.maybe, n)
		return err
	}
	created := time.Now()
	n.changed = created
	c.nets.add(n)
	c.mine = append(c.mine, n)
	c.stats.mu.Lock()
	c.stats.created++
	c.stats.mu.Unlock()
	if _, err := h.RunContainer(ctx, n.container, name); err != nil {
		c.stats.fail(err)
	}
	err = poll.Until(ctx, time.Minute, 20*time.Millisecond, func() error {
		for _, o := range c.l.Hosts {
			if o == h {
				continue
			}
			ok, err := o.HasRouteVia(subnet.String(), lab.VXLANDevice)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s: no route to %s (%s on %s)", o.Name, subnet, name, h.Name)
			}
		}
		return nil
	})
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil { // not the churn's stop cutting the wait short
			c.stats.notRoute++
		}
		return err
	}
	c.stats.routed = append(c.stats.routed, time.Since(created))
	return nil
}

// removeExtra removes the oldest churn networks beyond churnLive-1 (room
// for the next create).
func (c *churn) removeExtra(ctx context.Context) {
	if err := c.removeMaybe(ctx); err != nil {
		if ctx.Err() == nil {
			c.stats.fail(err)
		}
		return
	}
	for len(c.mine) >= churnLive {
		if err := c.removeNet(ctx, c.mine[0]); err != nil {
			if ctx.Err() == nil {
				c.stats.fail(err)
			}
			return
		}
		c.mine = c.mine[1:]
	}
}

// removeAll removes every churn network (the soak's end).
func (c *churn) removeAll(ctx context.Context) error {
	if err := c.removeMaybe(ctx); err != nil {
		return err
	}
	for len(c.mine) > 0 {
		if err := c.removeNet(ctx, c.mine[0]); err != nil {
			return err
		}
		c.mine = c.mine[1:]
	}
	return nil
}

// removeMaybe removes the networks whose create failed, if they exist.
func (c *churn) removeMaybe(ctx context.Context) error {
	for len(c.maybe) > 0 {
		if err := c.removeDocker(ctx, c.maybe[0]); err != nil {
			return err
		}
		c.maybe = c.maybe[1:]
	}
	return nil
}

func (c *churn) removeNet(ctx context.Context, n *liveNet) error {
	if err := c.removeDocker(ctx, n); err != nil {
		return err
	}
	c.nets.remove(n, time.Now())
	c.stats.mu.Lock()
	c.stats.removed++
	c.stats.mu.Unlock()
	return nil
}

// removeDocker removes n's container and network from Docker; either
// already gone is fine.
func (c *churn) removeDocker(ctx context.Context, n *liveNet) error {
	if _, err := n.host.Docker(ctx, "rm", "-f", n.container); err != nil && !strings.Contains(err.Error(), "No such container") {
		return err
	}
	// Already gone counts as removed: a removal the end of the churn cut
	// short (its docker CLI killed with its context) may have reached dockerd.
	if err := n.host.RemoveNetwork(ctx, n.Name); err != nil && !networkGone(err) {
		return err
	}
	return nil
}

// networkGone says whether a docker network rm failed because the network
// does not exist (Docker 20.10: "No such network"; others: "not found").
func networkGone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "No such network") || strings.Contains(msg, "not found")
}
