package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// Probe is a container that pings from its host.
type Probe struct {
	Host      *Host
	Container string
}

// Timing is how long a new network took to become reachable from other
// hosts, measured from `docker network create` returning.
type Timing struct {
	Host, Network, Subnet string
	Target                string                   // the container pinged on the new network
	Create                time.Duration            // how long docker network create itself took
	ContainerUp           time.Duration            // docker run of the target returned
	Route                 map[string]time.Duration // per other host: route via the VXLAN device present
	// Ping is, per probe host, the first echo reply measured from the
	// target container being up (what a user sees who pings a container
	// once it runs). The probes start pinging at that moment: pinging a
	// target that does not exist yet leaves the receiving bridge's ARP
	// request unanswered, and the kernel retries only after 1 s.
	Ping map[string]time.Duration
}

// RouteAll is when the route was present on every other host.
func (t Timing) RouteAll() time.Duration { return maxOf(t.Route) }

// PingAll is when every probe had its first reply.
func (t Timing) PingAll() time.Duration { return maxOf(t.Ping) }

func maxOf(m map[string]time.Duration) time.Duration {
	var worst time.Duration
	for _, d := range m {
		worst = max(worst, d)
	}
	return worst
}

// MeasureNetwork creates network name (subnet) on h with one container at
// the subnet's second address, and measures from the moment `docker network
// create` returns until every other host routes the subnet through the
// VXLAN device, and from the moment the container is up until each probe's
// first ping to it succeeds. Each probe's docker exec starts before the
// create and waits on its stdin; it starts pinging (every 50 ms) when the
// container is up, so exec start-up is not part of the measurement.
func (l *Lab) MeasureNetwork(ctx context.Context, h *Host, name, subnet string, probes []Probe, timeout time.Duration) (Timing, error) {
	t := Timing{Host: h.Name, Network: name, Subnet: subnet, Route: map[string]time.Duration{}, Ping: map[string]time.Duration{}}
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return t, fmt.Errorf("subnet %q: %w", subnet, err)
	}
	t.Target = pfx.Masked().Addr().Next().Next().String()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stop the ping streams on error paths

	replies := make(chan probeReply, len(probes))
	goPing := make(chan struct{})
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := p.firstReply(ctx, t.Target, timeout, goPing)
			replies <- probeReply{p.Host.Name, at, err}
		}()
	}

	start := time.Now()
	if err := h.CreateNetwork(ctx, name, subnet); err != nil {
		return t, err
	}
	t0 := time.Now()
	t.Create = t0.Sub(start)

	routesDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		routesDone <- l.waitRoutes(ctx, h, subnet, t0, t.Route)
	}()

	if _, err := h.RunContainer(ctx, name+"-c", name, "--ip", t.Target); err != nil {
		return t, err
	}
	up := time.Now()
	t.ContainerUp = up.Sub(t0)
	close(goPing)

	var errs []error
	for range probes {
		r := <-replies
		if r.err != nil {
			errs = append(errs, fmt.Errorf("ping from %s to %s: %w", r.host, t.Target, r.err))
			continue
		}
		t.Ping[r.host] = r.at.Sub(up)
	}
	if err := <-routesDone; err != nil {
		errs = append(errs, err)
	}
	return t, errors.Join(errs...)
}

type probeReply struct {
	host string
	at   time.Time
	err  error
}

// waitRoutes polls every other host's routes (cheap netlink dumps) until
// subnet is routed through the VXLAN device everywhere; it fills got (owned
// by this goroutine until it returns).
func (l *Lab) waitRoutes(ctx context.Context, owner *Host, subnet string, t0 time.Time, got map[string]time.Duration) error {
	var watchers []*RouteWatcher
	defer func() {
		for _, w := range watchers {
			w.Close()
		}
	}()
	for _, o := range l.Hosts {
		if o == owner {
			continue
		}
		w, err := o.NewRouteWatcher()
		if err != nil {
			return err
		}
		watchers = append(watchers, w)
	}
	return poll.Until(ctx, time.Hour, 5*time.Millisecond, func() error {
		var missing []string
		for _, w := range watchers {
			if _, ok := got[w.Host.Name]; ok {
				continue
			}
			ok, err := w.Via(subnet, VXLANDevice)
			if err != nil {
				return err
			}
			if !ok {
				missing = append(missing, w.Host.Name)
				continue
			}
			got[w.Host.Name] = time.Since(t0)
		}
		if len(missing) > 0 {
			return fmt.Errorf("no route to %s via %s on %s", subnet, VXLANDevice, strings.Join(missing, ", "))
		}
		return nil
	})
}

// firstReply starts a docker exec in the probe container that waits for a
// line on its stdin, sends that line when start closes, and returns when the
// first echo reply (pinging target every 50 ms) was read.
func (p Probe) firstReply(ctx context.Context, target string, timeout time.Duration, start <-chan struct{}) (time.Time, error) {
	secs := fmt.Sprint(int(timeout.Seconds()) + 1)
	// grep exits at the first reply; ping then dies of SIGPIPE, so nothing
	// keeps running in the container.
	script := fmt.Sprintf("read go; ping -i 0.05 -w %s %s | grep -m1 'bytes from'", secs, target)
	cmd := exec.CommandContext(ctx, dockerCLI(), "-H", p.Host.DockerHost(), "exec", "-i", p.Container, "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DOCKER_API_VERSION=1.41")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return time.Time{}, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return time.Time{}, err
	}
	if err := cmd.Start(); err != nil {
		return time.Time{}, fmt.Errorf("docker exec: %w", err)
	}
	select {
	case <-start:
		_, _ = io.WriteString(in, "go\n")
	case <-ctx.Done():
	}
	_ = in.Close()
	sc := bufio.NewScanner(out)
	var at time.Time
	for sc.Scan() {
		if at.IsZero() && strings.Contains(sc.Text(), "bytes from") {
			at = time.Now()
		}
	}
	werr := cmd.Wait()
	if at.IsZero() {
		if werr == nil {
			return at, errors.New("no reply")
		}
		return at, fmt.Errorf("no reply: %w", werr)
	}
	return at, nil
}
