// Command bench measures, on a real lab (hack/lab: 3 hosts with dockerd,
// flanneld, etcd and flannel-registrar), how long a new Docker network takes
// to become reachable from the other hosts: from `docker network create`
// returning on one host until the route is present on every other host, and
// until a first ping from a container on each other host's custom network
// succeeds. It prints a table with median and worst. Needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
)

type options struct {
	hosts, networks int
	state           string
	keep            bool
}

func main() {
	var o options
	flag.IntVar(&o.hosts, "hosts", 3, "hosts in the lab")
	flag.IntVar(&o.networks, "networks", 20, "networks to create (round robin over the hosts)")
	flag.StringVar(&o.state, "state", "/run/frlab-bench", "lab state directory")
	flag.BoolVar(&o.keep, "keep", false, "leave the lab up afterwards")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

var start = time.Now()

func progress(msg string) { fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), msg) }

func run(ctx context.Context, o options) (err error) {
	if o.networks < 1 || o.networks > 99 || o.hosts < 2 || o.hosts > 50 {
		return errors.New("want 2..50 hosts and 1..99 networks")
	}
	if err := lab.Down(ctx, o.state); err != nil {
		return err
	}
	l, err := lab.Up(ctx, lab.Options{Hosts: o.hosts, StateDir: o.state, Registrar: true, Progress: progress})
	defer func() {
		if o.keep {
			progress("lab kept in " + o.state)
			return
		}
		downCtx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		err = errors.Join(err, lab.Down(downCtx, o.state))
	}()
	if err != nil {
		return err
	}
	probes, err := startSources(ctx, l)
	if err != nil {
		return err
	}
	var ts []lab.Timing
	for k := 1; k <= o.networks; k++ {
		h := l.Hosts[(k-1)%len(l.Hosts)]
		name, subnet := fmt.Sprintf("bench%d", k), fmt.Sprintf("198.19.%d.0/24", 100+k)
		t, err := l.MeasureNetwork(ctx, h, name, subnet, others(probes, h), time.Minute)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", name, h.Name, err)
		}
		progress(fmt.Sprintf("%-8s on %s: route on all others %4d ms after the create, first ping from all others %4d ms after the target is up",
			name, h.Name, t.RouteAll().Milliseconds(), t.PingAll().Milliseconds()))
		ts = append(ts, t)
	}
	report(o, ts)
	return nil
}

// startSources gives every host a custom network with a container, the
// ping sources, and waits until they reach each other.
func startSources(ctx context.Context, l *lab.Lab) ([]lab.Probe, error) {
	var probes []lab.Probe
	ips := map[string]string{}
	for _, h := range l.Hosts {
		name := fmt.Sprintf("src%d", h.Index)
		if err := h.CreateNetwork(ctx, name, fmt.Sprintf("198.19.%d.0/24", 200+h.Index)); err != nil {
			return nil, err
		}
		ip, err := h.RunContainer(ctx, name+"-c", name)
		if err != nil {
			return nil, err
		}
		ips[h.Name] = ip
		probes = append(probes, lab.Probe{Host: h, Container: name + "-c"})
	}
	progress("waiting for the source containers to reach each other")
	for _, p := range probes {
		for _, q := range probes {
			if p.Host == q.Host {
				continue
			}
			err := poll.Until(ctx, time.Minute, 250*time.Millisecond, func() error {
				return p.Host.Ping(ctx, p.Container, ips[q.Host.Name])
			})
			if err != nil {
				return nil, fmt.Errorf("sources %s -> %s: %w", p.Host.Name, q.Host.Name, err)
			}
		}
	}
	return probes, nil
}

func others(ps []lab.Probe, h *lab.Host) []lab.Probe {
	return slices.DeleteFunc(slices.Clone(ps), func(p lab.Probe) bool { return p.Host == h })
}

func report(o options, ts []lab.Timing) {
	var create, up, routeAll, pingAll, routeEach, pingEach []time.Duration
	for _, t := range ts {
		create = append(create, t.Create)
		up = append(up, t.ContainerUp)
		routeAll = append(routeAll, t.RouteAll())
		pingAll = append(pingAll, t.PingAll())
		for _, d := range t.Route {
			routeEach = append(routeEach, d)
		}
		for _, d := range t.Ping {
			pingEach = append(pingEach, d)
		}
	}
	fmt.Printf("\n%d hosts, %d networks (round robin); routes from `docker network create` returning, pings from the target container being up:\n\n", o.hosts, len(ts))
	fmt.Printf("| %-46s | %7s | %8s | %8s | %8s |\n", "measure", "samples", "median", "worst", "best")
	fmt.Printf("|%s|%s|%s|%s|%s|\n", dashes(48), dashes(9), dashes(10), dashes(10), dashes(10))
	row := func(name string, ds []time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		fmt.Printf("| %-46s | %7d | %8s | %8s | %8s |\n", name, len(s), msText(median(s)), msText(s[len(s)-1]), msText(s[0]))
	}
	row("route present on every other host", routeAll)
	row("route present, per other host", routeEach)
	row("first ping from every other host (target up)", pingAll)
	row("first ping, per other host (target up)", pingEach)
	row("(docker run of the target returned, create)", up)
	row("(docker network create itself took)", create)
	fmt.Println("\nPings run every 50 ms from a container on a custom network of each other host (its docker exec")
	fmt.Println("started before the create); they start when the target container is up: what a user sees who pings")
	fmt.Println("a container once it runs. (Pinging before the target exists would add the kernel's 1 s ARP retry.)")
}

func median(s []time.Duration) time.Duration {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func msText(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func dashes(n int) string { return strings.Repeat("-", n) }
