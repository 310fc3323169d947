package dockertest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/mounts"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// cleanup removes everything the daemon made, in dependency order: its
// containers, dockerd, stray processes, cgroups, mounts, then D.
func (d *Daemon) cleanup() {
	if d.t.Failed() {
		d.t.Logf("dockerd log (%s), last lines:\n%s", d.Dir, d.LogTail(30))
	}
	if d.Running() {
		d.removeContainers()
	}
	var errs []error
	if err := d.stop(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, killMatching(d.Dir))
	errs = append(errs, removeCgroups(filepath.Base(d.Dir)))
	errs = append(errs, mounts.UnmountUnder(d.Dir))
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.Dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		d.t.Errorf("dockertest cleanup: %v", err)
	}
}

// removeContainers kills containers first: dockerd's own shutdown waits for
// each one's stop timeout.
func (d *Daemon) removeContainers() {
	ids, err := d.TryDocker("ps", "-aq")
	if err != nil || ids == "" {
		return
	}
	_, _ = d.TryDocker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
}

// killMatching SIGKILLs every process whose command line mentions dir (the
// daemon's containerd and shims, if dockerd left them) and waits for them.
func killMatching(dir string) error {
	pids := pidsMatching(dir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(pids) == 0 {
		return nil
	}
	return testutil.Poll(10*time.Second, func() error {
		if left := pidsMatching(dir); len(left) > 0 {
			return fmt.Errorf("processes of %s still running: %v", dir, left)
		}
		return nil
	})
}

func pidsMatching(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a zombie
		}
		if strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeCgroups kills what is left in the daemon's cgroup parent (container
// processes whose shim died) and removes its cgroup directories in every
// hierarchy (runc leaves the parent behind).
func removeCgroups(parent string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	if fi, err := os.Stat("/sys/fs/cgroup/" + parent); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+parent) // cgroup v2
	}
	var errs []error
	for _, root := range roots {
		for _, pid := range cgroupPids(root) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, root := range roots {
		err := testutil.Poll(10*time.Second, func() error { return rmdirTree(root) })
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func cgroupPids(root string) []int {
	var pids []int
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || de.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// rmdirTree removes cgroup directories bottom-up (cgroupfs only allows rmdir).
func rmdirTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, dir := range dirs {
		if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
	}
	return nil
}
