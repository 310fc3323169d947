package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
)

// demo brings up three hosts, creates a custom network with a container on
// each (timing how long each took to become reachable from the other
// hosts), prints an all-pairs reachability table and tears down unless keep.
func demo(ctx context.Context, o lab.Options, keep bool) (err error) {
	progress("cleaning any previous lab in " + o.StateDir)
	if err := lab.Down(ctx, o.StateDir); err != nil {
		return err
	}
	l, err := lab.Up(ctx, o)
	defer func() {
		if keep && l != nil {
			printPoke(l)
			return
		}
		progress("tearing the lab down (use --keep to leave it running)")
		err = errors.Join(err, down(o.StateDir))
	}()
	if err != nil {
		return err
	}

	probes, err := startProbes(ctx, l)
	if err != nil {
		return err
	}
	var timings []lab.Timing
	for _, h := range l.Hosts {
		name, subnet := fmt.Sprintf("demo%d", h.Index), fmt.Sprintf("198.19.%d.0/24", h.Index)
		progress(fmt.Sprintf("%s: docker network create --subnet %s %s, container %s-c", h.Name, subnet, name, name))
		t, err := l.MeasureNetwork(ctx, h, name, subnet, probesExcept(probes, h), 60*time.Second)
		if err != nil {
			return fmt.Errorf("network %s: %w", name, err)
		}
		timings = append(timings, t)
	}
	printTimings(timings)
	return reachability(ctx, l, timings)
}

// startProbes runs a container on every host's default bridge (the host's
// flannel subnet); they ping each new network from the other hosts.
func startProbes(ctx context.Context, l *lab.Lab) ([]lab.Probe, error) {
	var probes []lab.Probe
	for _, h := range l.Hosts {
		name := "probe-" + h.Name
		if _, err := h.RunContainer(ctx, name, "bridge"); err != nil {
			return nil, err
		}
		probes = append(probes, lab.Probe{Host: h, Container: name})
	}
	return probes, nil
}

func probesExcept(ps []lab.Probe, h *lab.Host) []lab.Probe {
	return slices.DeleteFunc(slices.Clone(ps), func(p lab.Probe) bool { return p.Host == h })
}

func printTimings(ts []lab.Timing) {
	fmt.Println("\nTime for each new network to become reachable from the other hosts")
	fmt.Println("(docker run and routes from `docker network create` returning; first ping from the target container")
	fmt.Println(" being up, from a container on each other host's default bridge)")
	fmt.Printf("\n%-8s %-6s %-16s %-14s %-16s %-16s\n", "network", "host", "subnet", "docker run", "route on all", "first ping, all")
	for _, t := range ts {
		fmt.Printf("%-8s %-6s %-16s %-14s %-16s %-16s\n", t.Network, t.Host, t.Subnet,
			ms(t.ContainerUp), ms(t.RouteAll()), ms(t.PingAll()))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// reachability pings and connects (TCP) from each demo container to every
// other one; the receiver's socket table shows the source address it saw.
func reachability(ctx context.Context, l *lab.Lab, ts []lab.Timing) error {
	fmt.Println("\nReachability between containers on custom networks (ping, and TCP with the source address the receiver saw)")
	fmt.Printf("\n%-20s", "from \\ to")
	for _, t := range ts {
		fmt.Printf("%-34s", fmt.Sprintf("%s %s", t.Network+"-c", t.Target))
	}
	fmt.Println()
	var errs []error
	for _, from := range ts {
		src := l.Host(hostIndex(from.Host))
		fmt.Printf("%-20s", fmt.Sprintf("%s (%s)", from.Network+"-c", from.Host))
		for _, to := range ts {
			if to.Network == from.Network {
				fmt.Printf("%-34s", "-")
				continue
			}
			cell, err := check(ctx, src, from.Network+"-c", from.Target, to.Target)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s -> %s: %w", from.Network, to.Network, err))
			}
			fmt.Printf("%-34s", cell)
		}
		fmt.Println()
	}
	if len(errs) == 0 {
		fmt.Println("\nall pairs reachable; every receiver saw the sender's container address")
	}
	return errors.Join(errs...)
}

func check(ctx context.Context, h *lab.Host, container, self, target string) (string, error) {
	if err := h.Ping(ctx, container, target); err != nil {
		return "ping FAILED", err
	}
	peers, err := h.TCPPeers(ctx, container, target)
	if err != nil {
		return "ping ok, tcp FAILED", err
	}
	if !slices.Contains(peers, self) {
		return "ping ok, tcp src " + strings.Join(peers, ","), fmt.Errorf("receiver saw %v, not %s", peers, self)
	}
	return "ping ok, tcp ok, src " + self, nil
}

// hostIndex turns "h2" into 2 (0 when it is not a host name).
func hostIndex(name string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(name, "h"))
	if err != nil || !strings.HasPrefix(name, "h") {
		return 0
	}
	return i
}
