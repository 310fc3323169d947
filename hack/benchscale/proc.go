package main

// This file: the processes a run starts and measures.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// quiet waits until p used no CPU time for 500 ms.
func quiet(ctx context.Context, p *proc, timeout time.Duration) error {
	_, last, err := p.usage()
	if err != nil {
		return err
	}
	still := 0
	return untilAlive(ctx, p, timeout, 100*time.Millisecond, func() error {
		_, cpu, err := p.usage()
		if err != nil {
			return err
		}
		if cpu != last {
			last, still = cpu, 0
			return errors.New("registrar still busy")
		}
		if still++; still < 5 {
			return errors.New("registrar quiet for less than 500 ms")
		}
		return nil
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// untilAlive polls check like poll.Until, and gives up at once when p exits.
func untilAlive(ctx context.Context, p *proc, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := poll.Until(ctx, timeout, interval, func() error {
		if p.exited() {
			cancel()
			return fmt.Errorf("%s exited (see %s)", p.name, p.log)
		}
		return check()
	})
	return err
}

// proc is a daemon started in a namespace (nsenter execs it: the pid is the
// daemon's own).
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(nsName, logPath string, env []string, argv0 string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + lab.NetnsPath(nsName), "--", argv0}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv0, err)
	}
	p := &proc{name: filepath.Base(argv0), log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }() // owned by p; joined in stop
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 10 s, and waits for the exit.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// usage returns the process's peak RSS (KiB) and user+system CPU time.
func (p *proc) usage() (uint64, time.Duration, error) {
	pid := p.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var rss uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			rss, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return rss, 0, err
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 14th and 15th fields, in clock ticks (100 per second).
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return rss, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return rss, time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
