package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Up brings a lab up. On error the partial lab stays for inspection;
// Down(StateDir) removes it (Up never leaves anything Down cannot find).
func Up(ctx context.Context, o Options) (*Lab, error) {
	if err := o.resolve(); err != nil {
		return nil, err
	}
	if err := checkFree(o); err != nil {
		return nil, err
	}
	l := newLab(o)
	for _, d := range []string{l.path("bin"), l.path("etcd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	for _, h := range l.Hosts {
		if err := os.MkdirAll(h.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	// Saved first: from here on Down knows the lab.
	if err := l.save(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := l.prepare(ctx); err != nil {
		return l, err
	}
	l.progress("starting etcd (%d members) on %s", l.EtcdMembers, l.EtcdEndpointList())
	if err := l.StartEtcd(ctx); err != nil {
		return l, err
	}
	if err := l.forEachHost(func(h *Host) error { return h.up(ctx) }); err != nil {
		return l, err
	}
	l.progress("lab up: %d hosts in %s", len(l.Hosts), time.Since(start).Round(100*time.Millisecond))
	return l, nil
}

// resolve fills defaults and finds the binaries the lab needs.
func (o *Options) resolve() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, dockerd)")
	}
	if err := o.setDefaults(); err != nil {
		return err
	}
	var err error
	if o.RepoRoot == "" {
		if o.RepoRoot, err = FindRepoRoot(); err != nil {
			return err
		}
	}
	if o.FlanneldBinary == "" {
		if o.FlanneldBinary, err = FindFlanneld(); err != nil {
			return err
		}
	}
	if o.GoBinary == "" {
		o.GoBinary = findGo()
	}
	var missing []string
	for _, b := range []string{"ip", "nsenter", "iptables", "sysctl", "dockerd", "containerd", "runc", dockerCLI()} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if _, err := FindBusybox(); err != nil {
		missing = append(missing, "busybox-static")
	}
	if o.RegistrarContainer {
		for _, b := range []string{"docker-compose", "mmdebstrap"} {
			if _, err := exec.LookPath(b); err != nil {
				missing = append(missing, b)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s (run hack/install-deps.sh)", strings.Join(missing, ", "))
	}
	return nil
}

// checkFree refuses to start over a lab that is still (partly) there.
func checkFree(o Options) error {
	ns, err := labNamespaces(NetnsPrefix(o.StateDir))
	if err != nil {
		return err
	}
	if len(ns) > 0 {
		return fmt.Errorf("a lab is already up (namespaces %s); run its down first", strings.Join(ns, " "))
	}
	if _, err := os.Stat(o.StateDir); err == nil {
		return fmt.Errorf("state dir %s exists (a lab is up or crashed); run down first", o.StateDir)
	}
	return nil
}

// prepare builds binaries and the image tarball while the topology is made.
func (l *Lab) prepare(ctx context.Context) error {
	var wg sync.WaitGroup
	var buildErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if buildErr = l.buildBinaries(ctx); buildErr == nil {
			buildErr = l.buildImageTar(ctx)
		}
		if buildErr == nil && l.Registrar && l.RegistrarContainer {
			buildErr = l.BuildRegistrarImage(ctx)
		}
	}()
	l.progress("creating namespaces %sunderlay, %setcd1..%d, %sh1..h%d", l.Prefix, l.Prefix, l.EtcdMembers, l.Prefix, len(l.Hosts))
	topoErr := l.createTopology(ctx)
	wg.Wait()
	return errors.Join(topoErr, buildErr)
}

func (h *Host) up(ctx context.Context) error {
	for _, c := range Components {
		if c == Registrar && !h.lab.Registrar {
			continue
		}
		t := time.Now()
		if err := h.Start(ctx, c); err != nil {
			return err
		}
		h.lab.progress("%s: %s up (%s)", h.Name, c, time.Since(t).Round(10*time.Millisecond))
	}
	return nil
}

// forEachHost runs f for every host concurrently and joins the errors.
func (l *Lab) forEachHost(f func(*Host) error) error {
	errs := make([]error, len(l.Hosts))
	var wg sync.WaitGroup
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(h)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// HostStatus is the state of one host's daemons.
type HostStatus struct {
	Name, Netns, IP string
	Subnet          string            // FLANNEL_SUBNET, if written
	Pids            map[Component]int // 0: not running
}

// Status is a snapshot of the lab's processes.
type Status struct {
	StateDir   string
	Namespaces []string
	EtcdPid    int   // member 1's
	EtcdPids   []int // per member; 0: not running
	Hosts      []HostStatus
}

// Status reports which lab processes are running.
func (l *Lab) Status() Status {
	s := Status{StateDir: l.StateDir}
	s.Namespaces, _ = labNamespaces(l.Prefix)
	for i := 1; i <= l.EtcdMembers; i++ {
		pid, _ := l.etcdPidfile(i).running()
		s.EtcdPids = append(s.EtcdPids, pid)
	}
	s.EtcdPid = s.EtcdPids[0]
	for _, h := range l.Hosts {
		hs := HostStatus{Name: h.Name, Netns: h.Netns, IP: h.IP, Pids: map[Component]int{}}
		hs.Subnet, _ = h.FlannelSubnet()
		for _, c := range Components {
			hs.Pids[c] = h.Pid(c)
		}
		s.Hosts = append(s.Hosts, hs)
	}
	return s
}
