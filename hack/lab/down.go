package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/mounts"
)

// Down removes the lab in stateDir, also one left by a crash or by an Up
// that failed midway: it kills the daemons from their pidfiles, then kills
// every process that lives in a lab namespace, runs from a root under the
// state dir (containers) or is a lab daemon naming the state dir, unmounts
// everything under the state dir, deletes the lab's namespaces and the
// state dir. It is idempotent.
func Down(ctx context.Context, stateDir string) error {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	stateDir = abs
	if !strings.HasPrefix(filepath.Base(stateDir), "frlab") {
		return fmt.Errorf("state dir %s: not a lab state dir (base name must start with \"frlab\")", stateDir)
	}
	prefix := NetnsPrefix(stateDir)
	stopPidfiles(ctx, stateDir)
	var errs []error
	if err := killLabProcesses(ctx, stateDir, prefix); err != nil {
		errs = append(errs, err)
	}
	if err := mounts.UnmountUnder(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNamespaces(ctx, prefix); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		errs = append(errs, fmt.Errorf("remove state dir: %w", err))
	}
	return errors.Join(errs...)
}

// stopPidfiles kills every recorded daemon at once. Nothing of the lab is
// worth a graceful stop (dockerd's takes seconds per container); what the
// daemons leave behind (shims, containers, mounts) is swept next.
func stopPidfiles(ctx context.Context, stateDir string) {
	files, _ := filepath.Glob(filepath.Join(stateDir, "*", "*.pid"))
	var wg sync.WaitGroup
	for _, f := range files {
		pf := pidfile(f)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = pf.stop(ctx, 0)
		}()
	}
	wg.Wait()
}

// daemonNames are the programs that may belong to a lab without living in
// a lab namespace (containerd shims are reparented, containers have their
// own namespaces); they are killed when their command line names the state dir.
var daemonNames = map[string]bool{
	"dockerd": true, "containerd": true, "containerd-shim": true, "containerd-shim-runc-v2": true,
	"docker-proxy": true, "runc": true, "flannel": true, "flanneld": true,
	"flannel-registrar": true, "labetcd": true, "nsenter": true,
}

func killLabProcesses(ctx context.Context, stateDir, prefix string) error {
	var pids []int
	for round := 0; round < 5; round++ {
		pids = labProcesses(stateDir, prefix)
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		_ = waitGone(ctx, pids, 5*time.Second)
	}
	return fmt.Errorf("lab processes survive SIGKILL: %v", pids)
}

// labProcesses finds the processes that belong to the lab (never this
// process or its ancestors).
func labProcesses(stateDir, prefix string) []int {
	nets := labNetnsInodes(stateDir, prefix)
	spare := ancestors()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || spare[pid] {
			continue
		}
		if belongsToLab(pid, stateDir, nets) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func belongsToLab(pid int, stateDir string, nets map[uint64]bool) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	var st syscall.Stat_t
	if syscall.Stat(proc+"/ns/net", &st) == nil && nets[st.Ino] {
		return true
	}
	if root, err := os.Readlink(proc + "/root"); err == nil && underDir(root, stateDir) {
		return true
	}
	b, err := os.ReadFile(proc + "/cmdline")
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return daemonNames[filepath.Base(args[0])] && strings.Contains(string(b), stateDir)
}

func underDir(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// labNetnsInodes returns the inodes of the lab's named namespaces and of
// every namespace bind-mounted under the state dir (Docker's container
// namespaces).
func labNetnsInodes(stateDir, prefix string) map[uint64]bool {
	paths := []string{}
	names, _ := labNamespaces(prefix)
	for _, n := range names {
		paths = append(paths, NetnsPath(n))
	}
	mounts, _ := mounts.Under(stateDir) // best effort, like the rest of the sweep
	for _, m := range mounts {
		if m.FSType == "nsfs" {
			paths = append(paths, m.Point)
		}
	}
	inodes := map[uint64]bool{}
	for _, p := range paths {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	return inodes
}

func ancestors() map[int]bool {
	spare := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !spare[pid]; {
		spare[pid] = true
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			break
		}
		f := statFields(string(b))
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return spare
}

func deleteNamespaces(ctx context.Context, prefix string) error {
	names, err := labNamespaces(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if _, err := run(ctx, "ip", "netns", "delete", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
