package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (l *Lab) etcdPidfile() pidfile { return pidfile(l.path("etcd", "etcd.pid")) }

// EtcdSocket is a unix socket served by the lab's etcd, usable from any
// network namespace (the TCP endpoint lives in the underlay namespace).
func (l *Lab) EtcdSocket() string { return l.path("etcd", "etcd.sock") }

// EtcdLog is the lab etcd's log file.
func (l *Lab) EtcdLog() string { return l.path("etcd", "etcd.log") }

// StartEtcd starts the lab's etcd in the underlay namespace on its data
// directory (kept across stops) and waits until it serves requests.
func (l *Lab) StartEtcd(ctx context.Context) error {
	if err := os.MkdirAll(l.path("etcd", "data"), 0o700); err != nil {
		return fmt.Errorf("etcd data dir: %w", err)
	}
	argv := inNetns(l.UnderlayNetns(), l.etcdBinary(),
		"--data-dir", l.path("etcd", "data"),
		"--client-url", EtcdClientURL,
		"--peer-url", etcdPeerURL,
		"--unix-socket", l.EtcdSocket(),
		"--flannel-prefix", FlannelPrefix,
		"--flannel-config", FlannelConfig,
	)
	if _, err := startDaemon(l.etcdPidfile(), l.EtcdLog(), baseEnv(), argv...); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return l.WaitEtcd(ctx, time.Minute)
}

// StopEtcd stops etcd gracefully (SIGTERM).
func (l *Lab) StopEtcd(ctx context.Context) error { return l.etcdPidfile().stop(ctx, 15*time.Second) }

// KillEtcd kills etcd with SIGKILL.
func (l *Lab) KillEtcd(ctx context.Context) error { return l.etcdPidfile().stop(ctx, 0) }

// PauseEtcd freezes the etcd process (SIGSTOP): its sockets stay open and
// requests hang, the harder outage for clients than a refused connection.
func (l *Lab) PauseEtcd() error { return l.signalEtcd(syscall.SIGSTOP) }

// ResumeEtcd lets a paused etcd run again (SIGCONT).
func (l *Lab) ResumeEtcd() error { return l.signalEtcd(syscall.SIGCONT) }

func (l *Lab) signalEtcd(sig syscall.Signal) error {
	pid, ok := l.etcdPidfile().running()
	if !ok {
		return fmt.Errorf("etcd is not running")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal etcd (%d) with %s: %w", pid, sig, err)
	}
	return nil
}

// EtcdRunning reports whether the lab's etcd process is alive.
func (l *Lab) EtcdRunning() bool { _, ok := l.etcdPidfile().running(); return ok }

// WaitEtcd waits until etcd reports healthy on its unix socket.
func (l *Lab) WaitEtcd(ctx context.Context, timeout time.Duration) error {
	hc := l.etcdHTTP()
	return poll.Until(ctx, timeout, 100*time.Millisecond, func() error {
		if !l.EtcdRunning() {
			return fmt.Errorf("etcd is not running (see %s)", l.EtcdLog())
		}
		resp, err := hc.Get("http://etcd/health")
		if err != nil {
			return fmt.Errorf("etcd health: %w", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"health":"true"`) {
			return fmt.Errorf("etcd health: %s %s", resp.Status, b)
		}
		return nil
	})
}

func (l *Lab) etcdHTTP() *http.Client {
	sock := l.EtcdSocket()
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// EtcdClient returns an etcd v3 client connected through the unix socket.
// The caller closes it.
func (l *Lab) EtcdClient() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + l.EtcdSocket()},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// EtcdctlCommand is the etcdctl command line a user runs against the lab
// (through the unix socket, from any namespace).
func (l *Lab) EtcdctlCommand() string {
	return "etcdctl --endpoints=unix://" + l.EtcdSocket()
}
