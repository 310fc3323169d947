// Command labctl drives the multi-host flannel lab of hack/lab: up, down,
// status, and demo (three hosts, a custom Docker network and a container on
// each, a reachability table and how long each network took to become
// reachable from the other hosts). It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const usage = `usage: labctl <command> [flags]

commands:
  up      [--hosts 3] [--etcd-members 3] [--no-registrar] [--container] [--topology routed [--no-gateway-map]]
                                         bring a lab up and leave it running; --etcd-members: 1 or 3
                                         etcd members; --container: the registrar as a container
                                         from make image's image, started with the repo's
                                         docker-compose.yml; --topology routed: two underlay
                                         subnets joined only by a gateway, registrars with
                                         HOST_GATEWAY_MAP unless --no-gateway-map
                                         (README "Complex network topology")
  down                                   remove the lab (also after a crash)
  status                                 show the lab's processes
  demo    [--keep] [--etcd-members 3]    up, custom networks across 3 hosts, reachability, down
  start|stop|kill|restart COMPONENT [HOST]
                                         COMPONENT: etcd (every member), etcd1..etcd3 (one member),
                                         or flanneld|dockerd|registrar with HOST (h1, ...)
  partition|heal etcdN                   cut etcd member N off the underlay (iptables), or undo it
  leader                                 print which etcd member leads
  etcd    [PREFIX]                       print the lab etcd's keys and values under PREFIX (default /)

common flags:
  --state DIR   state directory (default /run/frlab)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runCommand(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "labctl:", err)
		stop()
		os.Exit(1)
	}
}

func runCommand(ctx context.Context, name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	state := fs.String("state", lab.DefaultStateDir, "state directory")
	hosts := fs.Int("hosts", lab.DefaultHosts, "number of hosts (up)")
	members := fs.Int("etcd-members", 3, "etcd cluster size, 1 or 3 (up, demo)")
	noRegistrar := fs.Bool("no-registrar", false, "do not start flannel-registrar (up)")
	keep := fs.Bool("keep", false, "leave the lab running after the demo (demo)")
	container := fs.Bool("container", false, "run the registrar as a container with docker-compose.yml (up, demo)")
	topology := fs.String("topology", "flat", "underlay: flat (one subnet) or routed (two subnets joined by a gateway) (up)")
	noGatewayMap := fs.Bool("no-gateway-map", false, "routed topology: start the registrars without HOST_GATEWAY_MAP (up)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := lab.Options{Hosts: *hosts, EtcdMembers: *members, StateDir: *state, Registrar: !*noRegistrar, RegistrarContainer: *container, Topology: *topology, Progress: progress}
	opts.GatewayMap = *topology == lab.TopologyRouted && !*noGatewayMap
	switch name {
	case "up":
		return up(ctx, opts)
	case "down":
		return down(*state)
	case "status":
		return status(*state)
	case "demo":
		opts.Hosts, opts.Registrar = 3, true
		return demo(ctx, opts, *keep)
	case "etcd":
		return dumpEtcd(*state, fs.Arg(0))
	case "start", "stop", "kill", "restart":
		return component(ctx, *state, name, fs.Args())
	case "partition", "heal", "leader":
		return member(ctx, *state, name, fs.Args())
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", name, usage)
}

var started = time.Now()

func progress(msg string) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(started).Seconds(), msg)
}

func up(ctx context.Context, o lab.Options) error {
	l, err := lab.Up(ctx, o)
	if err != nil {
		return fmt.Errorf("%w\n(the partial lab is left for inspection; remove it with: labctl down --state %s)", err, o.StateDir)
	}
	printPoke(l)
	return nil
}

func down(state string) error {
	// Down must finish even when the user presses Ctrl-C again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t := time.Now()
	if err := lab.Down(ctx, state); err != nil {
		return err
	}
	progress(fmt.Sprintf("lab in %s removed (%s)", state, time.Since(t).Round(10*time.Millisecond)))
	return nil
}

func status(state string) error {
	l, err := lab.Load(state)
	if errors.Is(err, lab.ErrNoLab) {
		fmt.Printf("no lab in %s\n", state)
		return nil
	}
	if err != nil {
		return err
	}
	s := l.Status()
	fmt.Printf("state dir  %s\nnamespaces %v\n", s.StateDir, s.Namespaces)
	for i, pid := range s.EtcdPids {
		fmt.Printf("etcd%d      %-10s %s\n", i+1, pidText(pid), lab.EtcdMemberClientURL(i+1))
	}
	fmt.Println()
	fmt.Printf("%-4s %-14s %-16s %-10s %-10s %-10s %s\n", "host", "underlay", "flannel subnet", "flanneld", "dockerd", "registrar", "netns")
	for _, h := range s.Hosts {
		fmt.Printf("%-4s %-14s %-16s %-10s %-10s %-10s %s\n", h.Name, h.IP, h.Subnet,
			pidText(h.Pids[lab.Flanneld]), pidText(h.Pids[lab.Dockerd]), pidText(h.Pids[lab.Registrar]), h.Netns)
	}
	return nil
}

// component starts, stops, kills or restarts one lab daemon.
func component(ctx context.Context, state, verb string, args []string) error {
	l, err := lab.Load(state)
	if err != nil {
		return err
	}
	if len(args) == 1 && args[0] == "etcd" {
		switch verb {
		case "start":
			return l.StartEtcd(ctx)
		case "stop":
			return l.StopEtcd(ctx)
		case "kill":
			return l.KillEtcd(ctx)
		}
		if err := l.StopEtcd(ctx); err != nil {
			return err
		}
		return l.StartEtcd(ctx)
	}
	if len(args) == 1 && memberIndex(args[0]) > 0 {
		i := memberIndex(args[0])
		switch verb {
		case "start":
			return l.StartEtcdMember(ctx, i)
		case "stop":
			return l.StopEtcdMember(ctx, i)
		case "kill":
			return l.KillEtcdMember(ctx, i)
		}
		if err := l.StopEtcdMember(ctx, i); err != nil {
			return err
		}
		return l.StartEtcdMember(ctx, i)
	}
	if len(args) != 2 {
		return fmt.Errorf("usage: labctl %s etcd|etcdN | labctl %s flanneld|dockerd|registrar HOST", verb, verb)
	}
	c := lab.Component(args[0])
	if !slices.Contains(lab.Components, c) {
		return fmt.Errorf("unknown component %q (want etcd, flanneld, dockerd or registrar)", args[0])
	}
	i := hostIndex(args[1])
	if i < 1 || i > len(l.Hosts) {
		return fmt.Errorf("unknown host %q (h1..h%d)", args[1], len(l.Hosts))
	}
	h := l.Host(i)
	switch verb {
	case "start":
		return h.Start(ctx, c)
	case "stop":
		return h.Stop(ctx, c)
	case "kill":
		return h.Kill(ctx, c)
	}
	return h.Restart(ctx, c)
}

// memberIndex parses "etcd2" as 2; 0 when s names no member.
func memberIndex(s string) int {
	var i int
	if _, err := fmt.Sscanf(s, "etcd%d", &i); err != nil || fmt.Sprintf("etcd%d", i) != s {
		return 0
	}
	return i
}

// member partitions or heals one etcd member, or prints the leader.
func member(ctx context.Context, state, verb string, args []string) error {
	l, err := lab.Load(state)
	if err != nil {
		return err
	}
	if verb == "leader" {
		i, err := l.EtcdLeader(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("etcd%d\n", i)
		return nil
	}
	if len(args) != 1 || memberIndex(args[0]) == 0 {
		return fmt.Errorf("usage: labctl %s etcdN", verb)
	}
	if verb == "partition" {
		return l.PartitionEtcdMember(ctx, memberIndex(args[0]))
	}
	return l.HealEtcdMember(ctx, memberIndex(args[0]))
}

func dumpEtcd(state, prefix string) error {
	l, err := lab.Load(state)
	if err != nil {
		return err
	}
	if prefix == "" {
		prefix = "/"
	}
	cli, err := l.EtcdClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("get %s: %w", prefix, err)
	}
	for _, kv := range resp.Kvs {
		fmt.Printf("%s (lease %x, rev %d)\n  %s\n", kv.Key, kv.Lease, kv.ModRevision, kv.Value)
	}
	return nil
}

func pidText(pid int) string {
	if pid == 0 {
		return "down"
	}
	return fmt.Sprintf("pid %d", pid)
}

func printPoke(l *lab.Lab) {
	fmt.Println("\nThe lab is up. To poke at it:")
	for _, h := range l.Hosts {
		logs := "tail -f " + h.Log(lab.Registrar)
		if l.RegistrarContainer {
			logs = h.DockerCommand() + " logs -f " + lab.RegistrarContainerName
		}
		fmt.Printf("  %s:\n    %s ip route\n    %s ps\n    %s\n", h.Name, h.NsenterCommand(), h.DockerCommand(), logs)
	}
	if l.Routed() {
		fmt.Printf("  gateway (%s and %s; %s on its lo):\n    nsenter --net=%s ip route\n",
			lab.GatewayNearIP, lab.GatewayFarIP, lab.ExtraIP, lab.NetnsPath(l.GatewayNetns()))
		for _, h := range l.Hosts {
			fmt.Printf("    %s %s on %s, to the other side: %s\n", h.Name, h.IP, h.SubnetCIDR(), h.GatewayMapEnv())
		}
	}
	fmt.Printf("  etcd:\n    %s get --prefix /coreos.com/network/subnets\n    %s get --prefix /flannel/network/subnets\n",
		l.EtcdctlCommand(), l.EtcdctlCommand())
	fmt.Printf("  status / teardown:\n    go run ./hack/labctl status --state %s\n    go run ./hack/labctl down --state %s\n", l.StateDir, l.StateDir)
}
