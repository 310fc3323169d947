package lab

import (
	"bufio"
	"context"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"os"
	"strings"
	"time"
)

// Component is a per-host daemon of the lab.
type Component string

// The per-host daemons, in start order.
const (
	Flanneld  Component = "flanneld"
	Dockerd   Component = "dockerd"
	Registrar Component = "registrar"
)

// Components lists the per-host daemons in start order.
var Components = []Component{Flanneld, Dockerd, Registrar}

func (h *Host) pidfile(c Component) pidfile { return pidfile(h.path(string(c) + ".pid")) }

// Log is the log file of a component on this host.
func (h *Host) Log(c Component) string { return h.path(string(c) + ".log") }

// Running reports whether the component's process is alive.
func (h *Host) Running(c Component) bool { return h.Pid(c) != 0 }

// Pid returns the component's pid, or 0.
func (h *Host) Pid(c Component) int {
	if c == Registrar && h.lab.RegistrarContainer {
		return h.registrarContainerPid()
	}
	pid, _ := h.pidfile(c).running()
	return pid
}

// Start starts a component and waits until it is usable (flanneld: subnet
// file written; dockerd: API answers and the test image is there;
// registrar: process started).
func (h *Host) Start(ctx context.Context, c Component) error {
	switch c {
	case Flanneld:
		return h.startFlanneld(ctx)
	case Dockerd:
		return h.startDockerd(ctx)
	case Registrar:
		if h.lab.RegistrarContainer {
			return h.StartRegistrarContainer(ctx)
		}
		return h.startRegistrar(ctx)
	}
	return fmt.Errorf("unknown component %q", c)
}

// Stop stops a component gracefully (SIGTERM, SIGKILL after a grace period).
func (h *Host) Stop(ctx context.Context, c Component) error {
	if c == Registrar && h.lab.RegistrarContainer {
		_, err := h.Docker(ctx, "stop", RegistrarContainerName)
		return err
	}
	grace := 10 * time.Second
	if c == Dockerd {
		grace = 30 * time.Second
	}
	return h.pidfile(c).stop(ctx, grace)
}

// Kill kills a component with SIGKILL and waits until it is gone.
func (h *Host) Kill(ctx context.Context, c Component) error {
	if c == Registrar && h.lab.RegistrarContainer {
		_, err := h.Docker(ctx, "kill", RegistrarContainerName)
		return err
	}
	return h.pidfile(c).stop(ctx, 0)
}

// Restart stops (gracefully) and starts a component.
func (h *Host) Restart(ctx context.Context, c Component) error {
	if err := h.Stop(ctx, c); err != nil {
		return err
	}
	return h.Start(ctx, c)
}

// SubnetFile is flanneld's subnet.env of this host.
func (h *Host) SubnetFile() string { return h.path("subnet.env") }

func (h *Host) startFlanneld(ctx context.Context) error {
	prev := fileMtime(h.SubnetFile())
	argv := inNetns(h.Netns, h.lab.FlanneldBinary,
		"--etcd-endpoints="+h.lab.EtcdEndpointList(),
		"--etcd-prefix="+FlannelPrefix,
		"--iface=eth0",
		"--public-ip="+h.IP,
		"--subnet-file="+h.SubnetFile(),
	)
	if _, err := startDaemon(h.pidfile(Flanneld), h.Log(Flanneld), baseEnv(), argv...); err != nil {
		return fmt.Errorf("host %s: flanneld: %w", h.Name, err)
	}
	// flanneld writes subnet.env once it holds its lease; a restart rewrites it.
	err := poll.Until(ctx, 60*time.Second, 50*time.Millisecond, func() error {
		if !h.Running(Flanneld) {
			return fmt.Errorf("flanneld exited (see %s)", h.Log(Flanneld))
		}
		if m := fileMtime(h.SubnetFile()); m.IsZero() || !m.After(prev) {
			return fmt.Errorf("%s not written yet", h.SubnetFile())
		}
		_, err := h.FlannelSubnet()
		return err
	})
	if err != nil {
		return fmt.Errorf("host %s: flanneld: %w", h.Name, err)
	}
	return nil
}

func fileMtime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// SubnetEnv parses flanneld's subnet.env of this host.
func (h *Host) SubnetEnv() (map[string]string, error) {
	f, err := os.Open(h.SubnetFile())
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			env[k] = v
		}
	}
	return env, sc.Err()
}

// FlannelSubnet is FLANNEL_SUBNET of this host, e.g. 198.18.7.1/24 (the
// host's first address in its flannel subnet, Docker's --bip).
func (h *Host) FlannelSubnet() (string, error) {
	env, err := h.SubnetEnv()
	if err != nil {
		return "", err
	}
	s := env["FLANNEL_SUBNET"]
	if s == "" || env["FLANNEL_MTU"] == "" {
		return "", fmt.Errorf("host %s: FLANNEL_SUBNET or FLANNEL_MTU missing in %s", h.Name, h.SubnetFile())
	}
	return s, nil
}

func (h *Host) startRegistrar(ctx context.Context) error { return h.startRegistrarWith(ctx, nil) }

func (h *Host) startRegistrarWith(ctx context.Context, extraEnv []string) error {
	env := append(baseEnv(),
		"ETCD_ENDPOINT="+h.lab.EtcdEndpointList(),
		"HOST_NAME="+h.Name,
		"DOCKER_HOST=unix://"+h.DockerSocket(),
		fmt.Sprintf("INTERVAL=%d", h.lab.Interval),
		"LOG_FORMAT=json",
		// The lab's container networks are in the benchmark range, outside
		// the policy's default (flannel's Network and RFC 1918).
		"ALLOWED_SUBNETS="+AllowedSubnets,
		// One heartbeat per host: the lab's registrars share one filesystem.
		"HEALTH_FILE="+h.path("registrar.health"),
	)
	env = append(env, h.topologyEnv()...)
	env = append(env, h.lab.RegistrarEnv...)
	env = append(env, extraEnv...)
	argv := inNetns(h.Netns, h.lab.RegistrarPath())
	if _, err := startDaemon(h.pidfile(Registrar), h.Log(Registrar), env, argv...); err != nil {
		return fmt.Errorf("host %s: registrar: %w", h.Name, err)
	}
	// A daemon that dies on a bad config does so at once; catch that here.
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	if !h.Running(Registrar) {
		return fmt.Errorf("host %s: registrar exited at start (see %s)", h.Name, h.Log(Registrar))
	}
	return nil
}
