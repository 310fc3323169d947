package lab

import (
	"context"
	"errors"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A pidfile holds "<pid> <start time>": the start time (from /proc/<pid>/stat)
// makes sure a recycled pid is never signalled.
type pidfile string

// startDaemon starts argv as a daemon that outlives the calling process: its
// own session, output appended to logPath, pid recorded in pf. It is our
// child until we exit, so liveness checks reap it (see alive).
func startDaemon(pf pidfile, logPath string, env []string, argv ...string) (int, error) {
	if pid, ok := pf.running(); ok {
		return 0, fmt.Errorf("%s already running (pid %d)", pf.name(), pid)
	}
	if err := os.MkdirAll(filepath.Dir(string(pf)), 0o755); err != nil {
		return 0, fmt.Errorf("pidfile dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer logf.Close()
	_, _ = fmt.Fprintf(logf, "=== frlab: %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	// Write the pidfile before anything else can fail, so Down finds it.
	if err := pf.write(pid); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	_ = cmd.Process.Release()
	return pid, nil
}

func (pf pidfile) name() string {
	return strings.TrimSuffix(filepath.Base(string(pf)), ".pid")
}

func (pf pidfile) write(pid int) error {
	st, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("pidfile %s: %w", pf, err)
	}
	if err := os.WriteFile(string(pf), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// read returns the recorded pid if that very process still exists.
func (pf pidfile) running() (int, bool) {
	b, err := os.ReadFile(string(pf))
	if err != nil {
		return 0, false
	}
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &st); err != nil || pid <= 0 {
		return 0, false
	}
	if !alive(pid) {
		return 0, false
	}
	if cur, err := startTime(pid); err != nil || cur != st {
		return 0, false
	}
	return pid, true
}

// stop signals the recorded process and waits until it is gone; after
// grace it is killed. grace 0 means SIGKILL at once.
func (pf pidfile) stop(ctx context.Context, grace time.Duration) error {
	pid, ok := pf.running()
	if !ok {
		_ = os.Remove(string(pf))
		return nil
	}
	if err := terminate(ctx, pid, grace); err != nil {
		return fmt.Errorf("stop %s: %w", pf.name(), err)
	}
	_ = os.Remove(string(pf))
	return nil
}

// terminate sends SIGTERM (or SIGKILL when grace is 0), waits up to grace,
// then SIGKILLs and waits for the process to be gone.
func terminate(ctx context.Context, pid int, grace time.Duration) error {
	if grace > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if waitGone(ctx, []int{pid}, grace) == nil {
			return nil
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return waitGone(ctx, []int{pid}, 10*time.Second)
}

// alive reports whether pid exists and is not a zombie. It first reaps pid
// if it is a child of ours that exited (daemons started by this process).
func alive(pid int) bool {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := statFields(string(b))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may contain spaces): state is field 0, start time field 19.
func statFields(stat string) []string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(stat[i+1:])
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	f := statFields(string(b))
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func waitGone(ctx context.Context, pids []int, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 20*time.Millisecond, func() error {
		var left []string
		for _, p := range pids {
			if alive(p) {
				left = append(left, strconv.Itoa(p))
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("processes still alive: %s", strings.Join(left, " "))
		}
		return nil
	})
}

// run executes a short command and returns its combined output.
func run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// inNetns prefixes argv so it runs in the named network namespace. nsenter
// --net (unlike ip netns exec) does not remount /sys, which dockerd needs.
func inNetns(ns string, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + NetnsPath(ns), "--"}, argv...)
}

// baseEnv is the environment of lab daemons: nothing inherited from the
// caller except what the daemons need to find their tools.
func baseEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
	}
}
