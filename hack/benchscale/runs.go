package main

// This file: one run (flanneld, the registrar, the kernel floor).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// host is a fresh namespace with an underlay veth to the etcd namespace.
type host struct {
	name string
	dir  string
	h    *netlinkx.Handle
	ns   netns.NsHandle
}

func (b *bench) newHost(vxlan bool) (*host, error) {
	b.runs++
	h := &host{name: fmt.Sprintf("frscale-%d-%d", os.Getpid(), b.runs), dir: filepath.Join(b.dir, fmt.Sprintf("run%d", b.runs))}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	if err := ipCmd("netns", "add", h.name); err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("v%d", b.runs)
	cmds := [][]string{
		{"-n", h.name, "link", "set", "lo", "up"},
		{"-n", h.name, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", b.etcdNS},
		{"-n", h.name, "addr", "add", hostIP + "/24", "dev", "eth0"},
		{"-n", h.name, "link", "set", "eth0", "up"},
		{"-n", b.etcdNS, "link", "set", peer, "master", "br0", "up"},
	}
	if vxlan {
		cmds = append(cmds,
			[]string{"-n", h.name, "link", "add", iface, "type", "vxlan", "id", "1", "local", hostIP, "dev", "eth0", "dstport", "8472", "nolearning"},
			[]string{"-n", h.name, "link", "set", iface, "up"})
	}
	for _, c := range cmds {
		if err := ipCmd(c...); err != nil {
			h.close()
			return nil, err
		}
	}
	var err error
	if h.ns, err = netns.GetFromName(h.name); err != nil {
		h.close()
		return nil, err
	}
	if h.h, err = netlinkx.Open(h.ns); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *host) close() {
	if h.h != nil {
		h.h.Close()
	}
	if h.ns.IsOpen() {
		_ = h.ns.Close()
	}
	// The devices go first, here: deleting flannel.1 drops its 10,000
	// routes and neighbours under the kernel's lock (seconds for flannel's
	// shape), and left to the namespace's deletion that ran in a kernel
	// worker after we returned, stalling the next run's writes.
	_ = ipCmd("-n", h.name, "link", "del", iface)
	_ = ipCmd("netns", "del", h.name)
}

// tunnelRoutes counts the main table's routes on flannel.1.
func tunnelRoutes(h *netlinkx.Handle) (int, error) {
	l, err := h.LinkByName(iface)
	if err != nil {
		return 0, err
	}
	rs, err := h.Routes(&netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	return len(rs), err
}

// converge waits until n routes are on flannel.1, as w hears them
// announced and a dump confirms, and returns the time since t0 and the
// process's peak RSS and CPU at that moment. Should the notifications
// overflow their socket, the table is dumped every 100 ms instead.
func (b *bench) converge(ctx context.Context, h *host, p *proc, w *routeWatch, n int, t0 time.Time) (row, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var d time.Duration
	confirm := func() {
		at := time.Since(t0)
		if got, err := tunnelRoutes(h.h); err == nil && got >= n {
			d = at
		}
	}
	for d == 0 {
		select {
		case <-ctx.Done():
			got, _ := tunnelRoutes(h.h)
			return row{}, fmt.Errorf("%d of %d routes (%d announced): %w", got, n, len(w.dsts), ctx.Err())
		case u, ok := <-w.updates:
			if !ok {
				return row{}, errors.New("route notifications ended")
			}
			if len(w.dsts) < n && w.apply(u, n) {
				confirm()
			} else if len(w.dsts) >= n {
				w.apply(u, n)
			}
		case <-tick.C:
			if p.exited() {
				return row{}, fmt.Errorf("%s exited (see %s)", p.name, p.log)
			}
			// Announced but not all in the table at that moment (a
			// route replaced, or notifications lost): the table decides.
			if w.lost.Load() || len(w.dsts) >= n {
				confirm()
			}
		}
	}
	rss, cpu, err := p.usage()
	if err == nil && hold > 0 {
		select {
		case <-ctx.Done():
			return row{}, ctx.Err()
		case <-time.After(hold):
		}
		rss, _, err = p.usage() // VmHWM: the peak since start
	}
	return row{n: n, time: d, rss: rss, cpu: cpu}, err
}

func (b *bench) flanneldRun(ctx context.Context, n int) (row, error) {
	h, err := b.newHost(false)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	w, err := watchRoutes(h)
	if err != nil {
		return row{}, err
	}
	defer w.stop()
	t0 := time.Now()
	p, err := start(h.name, filepath.Join(h.dir, "flanneld.log"), nil, b.flanneld,
		"--etcd-endpoints=http://"+etcdIP+":2379", "--etcd-prefix="+flannelPrefix, "--iface=eth0",
		"--public-ip="+hostIP, "--subnet-file="+filepath.Join(h.dir, "subnet.env"))
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	r, err := b.converge(ctx, h, p, w, n, t0)
	r.who = "flanneld " + flanneldVersion(b.flanneld) + ", " + whoFlanneld
	r.who = strings.Replace(r.who, "flanneld dev,", "flanneld,", 1)
	return r, err
}

func flanneldVersion(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// registrarRun starts dockerd and then the registrar in a fresh host with a
// flannel.1 of its own, waits for n routes, then runs after (if any) with
// the converged host.
func (b *bench) registrarRun(ctx context.Context, n int, who string, after func(context.Context, *netlinkx.Handle) error) (row, error) {
	h, err := b.newHost(true)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	sock := filepath.Join(h.dir, "docker.sock")
	cfg := filepath.Join(h.dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		return row{}, err
	}
	d, err := start(h.name, filepath.Join(h.dir, "dockerd.log"), nil, "dockerd", "--config-file", cfg,
		"--data-root", filepath.Join(h.dir, "docker"), "--exec-root", filepath.Join(h.dir, "exec"),
		"--pidfile", filepath.Join(h.dir, "docker.pid"), "-H", "unix://"+sock, "--bridge", "none", "--shutdown-timeout", "2")
	if err != nil {
		return row{}, err
	}
	defer d.stop()
	if err := untilAlive(ctx, d, 90*time.Second, 100*time.Millisecond, func() error {
		return exec.CommandContext(ctx, "docker", "-H", "unix://"+sock, "version").Run()
	}); err != nil {
		return row{}, err
	}
	for i := range b.locals {
		// Local networks of the measured host (10.250.i.0/24, outside the remote subnets).
		if out, err := exec.CommandContext(ctx, "docker", "-H", "unix://"+sock, "network", "create",
			"--subnet", fmt.Sprintf("10.250.%d.0/24", i), fmt.Sprintf("local%d", i)).CombinedOutput(); err != nil {
			return row{}, fmt.Errorf("docker network create: %w: %s", err, out)
		}
	}
	interval := b.interval
	if interval == 0 {
		interval = time.Minute
	}
	env := []string{"ETCD_ENDPOINT=http://" + etcdIP + ":2379", "HOST_NAME=bench", "DOCKER_HOST=unix://" + sock,
		// RUN_AS_ROOT: the run's dockerd socket lies in a root-only work
		// directory; dropping privileges changes nothing measured here.
		"DOCKER_API_VERSION=1.41", "LOG_FORMAT=json", "ALLOWED_SUBNETS=10.0.0.0/8", "RUN_AS_ROOT=true",
		fmt.Sprintf("INTERVAL=%d", int(interval.Seconds()))}
	if profile {
		env = append(env, "FR_CPUPROFILE="+filepath.Join(h.dir, "cpu.pprof"), "FR_HEAPPROFILE="+filepath.Join(h.dir, "heap.pprof"),
			"FR_HEAPPROFILE_PEAK="+filepath.Join(h.dir, "heap-peak.pprof"))
	}
	if extraEnv != "" {
		env = append(env, strings.Split(extraEnv, ",")...)
	}
	w, err := watchRoutes(h)
	if err != nil {
		return row{}, err
	}
	defer w.stop()
	t0 := time.Now()
	p, err := start(h.name, filepath.Join(h.dir, "registrar.log"), env, b.registrar)
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	r, err := b.converge(ctx, h, p, w, n, t0)
	r.who = who
	if err != nil || after == nil {
		return r, err
	}
	// "Installed" means converged and quiet: wait until the registrar has
	// used no CPU for 500 ms (the echoes of its own writes are processed).
	if err := quiet(ctx, p, b.timeout); err != nil {
		return r, err
	}
	return r, after(ctx, h.h)
}

// newRecord writes one record of a new host (new VTEP) and returns the time
// until its route, its VTEP's neighbour and FDB entry are all in place.
func (b *bench) newRecord(ctx context.Context, h *netlinkx.Handle, n, perVTEP int) (time.Duration, error) {
	i := ((n+perVTEP-1)/perVTEP + 1) * perVTEP // the first subnet of a VTEP with no records yet
	k, v, err := record(i, perVTEP)
	if err != nil {
		return 0, err
	}
	l, err := h.LinkByName(iface)
	if err != nil {
		return 0, err
	}
	idx, s, mac := l.Attrs().Index, subnet(i), vtepMAC(i/perVTEP)
	t0 := time.Now()
	if _, err := b.cli.Put(ctx, k, v); err != nil {
		return 0, err
	}
	err = poll.Until(ctx, b.timeout, time.Millisecond, func() error {
		rs, err := h.RoutesTo(s)
		if err != nil || len(rs) == 0 {
			return fmt.Errorf("no route to %s (%w)", s, err)
		}
		nb, err := h.Neigh(idx, netlinkx.Addr(rs[0].Gw))
		if err != nil || nb == nil || nb.HardwareAddr.String() != mac.String() {
			return fmt.Errorf("no neighbour %s (%w)", rs[0].Gw, err)
		}
		f, err := h.FDBEntry(idx, mac)
		if err != nil || f == nil {
			return fmt.Errorf("no fdb entry %s (%w)", mac, err)
		}
		return nil
	})
	return time.Since(t0), err
}

// floor programs the same objects with one `ip -batch` (neighbours first,
// then routes) and a `bridge -batch` for the FDB entries in a fresh host:
// perVTEP 1 is the leases' shape (each subnet via its own address), more
// the records' (each VTEP's subnets via its first subnet's address).
func (b *bench) floor(ctx context.Context, n, perVTEP int, who string) (row, error) {
	h, err := b.newHost(true)
	if err != nil {
		return row{}, err
	}
	defer h.close()
	var neigh, routes, fdb strings.Builder
	for i := range n {
		v := i / perVTEP
		gw := subnet(v * perVTEP).Addr()
		if i%perVTEP == 0 {
			fmt.Fprintf(&neigh, "neigh replace %s lladdr %s dev %s nud permanent\n", gw, vtepMAC(v), iface)
			fmt.Fprintf(&fdb, "fdb append %s dev %s dst %s self permanent\n", vtepMAC(v), iface, vtepIP(v))
		}
		fmt.Fprintf(&routes, "route replace %s via %s dev %s onlink\n", subnet(i), gw, iface)
	}
	ipBatch := filepath.Join(h.dir, "ip.batch")
	bridgeBatch := filepath.Join(h.dir, "bridge.batch")
	if err := os.WriteFile(ipBatch, []byte(neigh.String()+routes.String()), 0o644); err != nil {
		return row{}, err
	}
	if err := os.WriteFile(bridgeBatch, []byte(fdb.String()), 0o644); err != nil {
		return row{}, err
	}
	t0 := time.Now()
	for _, c := range [][]string{{"ip", "-n", h.name, "-batch", ipBatch}, {"nsenter", "--net=" + lab.NetnsPath(h.name), "bridge", "-batch", bridgeBatch}} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return row{}, fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	d := time.Since(t0)
	got, err := tunnelRoutes(h.h)
	if err == nil && got != n {
		err = fmt.Errorf("floor: %d routes, want %d", got, n)
	}
	return row{who: who, n: n, time: d}, err
}
