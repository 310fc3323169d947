package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	"github.com/vishvananda/netns"
)

// metricsAddr is the registrar's default METRICS_ADDR: loopback in its
// host's namespace, reached by a socket made in that namespace.
const metricsAddr = "127.0.0.1:9653"

// measureUsage reads every registrar's RSS (/proc/<pid>/status VmRSS) and
// goroutine count (go_goroutines on /metrics).
func measureUsage(ctx context.Context, l *lab.Lab) []Usage {
	var out []Usage
	for _, h := range l.Hosts {
		u := Usage{Host: h.Name, Pid: h.Pid(lab.Registrar)}
		var errs []error
		if u.Pid == 0 {
			errs = append(errs, errors.New("registrar not running"))
		} else if st, err := testutil.ProcStatus(u.Pid); err != nil {
			errs = append(errs, fmt.Errorf("status of %d: %w", u.Pid, err))
		} else if u.RSSKiB, err = parseKiB(st["VmRSS"]); err != nil {
			errs = append(errs, err)
		}
		g, err := goroutines(ctx, h)
		if err != nil {
			errs = append(errs, err)
		}
		u.Goroutines = g
		u.Err = errors.Join(errs...)
		out = append(out, u)
	}
	return out
}

// parseKiB parses a /proc status size such as "23456 kB".
func parseKiB(v string) (int64, error) {
	n, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
	if unit != "kB" {
		return 0, fmt.Errorf("size %q: want <n> kB", v)
	}
	return strconv.ParseInt(n, 10, 64)
}

// goroutines scrapes the goroutine count from the host's registrar.
func goroutines(ctx context.Context, h *lab.Host) (int, error) {
	hc := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, h.Netns, network, addr)
		}},
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: metrics: %w", h.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: metrics: %s", h.Name, resp.Status)
	}
	return parseGoroutines(resp.Body)
}

// parseGoroutines finds the go_goroutines sample in a Prometheus text page
// (the registrar exports it as flannel_registrar_go_goroutines).
func parseGoroutines(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == "go_goroutines" || strings.HasSuffix(f[0], "_go_goroutines")) {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("go_goroutines %q: %w", f[1], err)
			}
			return int(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no go_goroutines sample")
}

// dialIn connects from inside the named network namespace: the socket is
// made on an OS thread switched into it, and stays there afterwards.
func dialIn(ctx context.Context, nsName, network, addr string) (net.Conn, error) {
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsName, err)
	}
	defer ns.Close()
	var conn net.Conn
	err = inNetns(ns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// inNetns runs f on an OS thread inside ns. It runs in a goroutine of its
// own, joined before return: if the thread cannot be switched back, that
// goroutine ends still locked, and Go discards the thread.
func inNetns(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return // still locked: the thread is dropped with this goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}
