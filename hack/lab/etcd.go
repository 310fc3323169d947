package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The lab's etcd is a cluster of EtcdMembers members (1 or 3), member i
// (1-based) in its own network namespace <prefix>etcd<i> with the underlay
// address EtcdMemberIP(i), so one member can be killed or partitioned
// without touching the others. The whole-cluster methods (StartEtcd,
// StopEtcd, KillEtcd, PauseEtcd, ResumeEtcd, WaitEtcd, EtcdClient) act on
// every member; the EtcdMember ones on one (see etcdmember.go).

// EtcdMemberIP is member i's underlay address: 198.51.100.2, .3, .4.
func EtcdMemberIP(i int) string { return "198.51.100." + strconv.Itoa(1+i) }

// EtcdMemberClientURL is member i's client URL on the underlay.
func EtcdMemberClientURL(i int) string { return "http://" + EtcdMemberIP(i) + ":2379" }

func etcdMemberPeerURL(i int) string { return "http://" + EtcdMemberIP(i) + ":2380" }

func etcdMemberName(i int) string { return "etcd" + strconv.Itoa(i) }

// EtcdMemberCount is the number of etcd members of the lab.
func (l *Lab) EtcdMemberCount() int { return l.EtcdMembers }

// EtcdEndpoints are the client URLs of every member, what flanneld and the
// registrars are given.
func (l *Lab) EtcdEndpoints() []string {
	var eps []string
	for i := 1; i <= l.EtcdMembers; i++ {
		eps = append(eps, EtcdMemberClientURL(i))
	}
	return eps
}

// EtcdEndpointList is EtcdEndpoints comma-separated (ETCD_ENDPOINT,
// flanneld's -etcd-endpoints).
func (l *Lab) EtcdEndpointList() string { return strings.Join(l.EtcdEndpoints(), ",") }

// EtcdMemberNetns is member i's network namespace.
func (l *Lab) EtcdMemberNetns(i int) string { return l.Prefix + etcdMemberName(i) }

func (l *Lab) etcdPidfile(i int) pidfile {
	return pidfile(l.path("etcd", etcdMemberName(i)+".pid"))
}

// EtcdMemberDataDir is member i's data directory (kept across restarts).
func (l *Lab) EtcdMemberDataDir(i int) string { return l.path("etcd", etcdMemberName(i), "data") }

// EtcdMemberSocket is a unix socket served by member i, usable from any
// network namespace (and while the member is partitioned).
func (l *Lab) EtcdMemberSocket(i int) string { return l.path("etcd", etcdMemberName(i)+".sock") }

// EtcdSocket is member 1's unix socket (EtcdClient uses every member's).
func (l *Lab) EtcdSocket() string { return l.EtcdMemberSocket(1) }

// EtcdMemberLog is member i's log file.
func (l *Lab) EtcdMemberLog(i int) string { return l.path("etcd", etcdMemberName(i)+".log") }

// EtcdLog is member 1's log file.
func (l *Lab) EtcdLog() string { return l.EtcdMemberLog(1) }

func (l *Lab) initialCluster() string {
	var parts []string
	for i := 1; i <= l.EtcdMembers; i++ {
		parts = append(parts, etcdMemberName(i)+"="+etcdMemberPeerURL(i))
	}
	return strings.Join(parts, ",")
}

// launchEtcdMember starts member i's process without waiting for it. On an
// existing data directory etcd ignores the initial-cluster flags and
// rejoins its cluster.
func (l *Lab) launchEtcdMember(i int) error {
	if err := os.MkdirAll(l.EtcdMemberDataDir(i), 0o700); err != nil {
		return fmt.Errorf("etcd member %d data dir: %w", i, err)
	}
	args := []string{
		"--name", etcdMemberName(i),
		"--data-dir", l.EtcdMemberDataDir(i),
		"--client-url", EtcdMemberClientURL(i),
		"--peer-url", etcdMemberPeerURL(i),
		"--initial-cluster", l.initialCluster(),
		"--unix-socket", l.EtcdMemberSocket(i),
		// A member does not wait for its peers: with the others down
		// it cannot be ready, and WaitEtcd is where the lab waits.
		"--startup-timeout", "0",
	}
	if i == 1 {
		// The flannel config is written once, by member 1 (create if absent).
		args = append(args, "--flannel-prefix", FlannelPrefix, "--flannel-config", FlannelConfig)
	}
	argv := inNetns(l.EtcdMemberNetns(i), append([]string{l.etcdBinary()}, args...)...)
	if _, err := startDaemon(l.etcdPidfile(i), l.EtcdMemberLog(i), baseEnv(), argv...); err != nil {
		return fmt.Errorf("etcd member %d: %w", i, err)
	}
	return nil
}

// StartEtcd starts every member that is not running (all at once: a member
// of a cluster is ready only with a quorum) and waits until every member
// serves requests.
func (l *Lab) StartEtcd(ctx context.Context) error {
	for i := 1; i <= l.EtcdMembers; i++ {
		if _, ok := l.etcdPidfile(i).running(); ok {
			continue
		}
		if err := l.launchEtcdMember(i); err != nil {
			return err
		}
	}
	return l.WaitEtcd(ctx, time.Minute)
}

// StopEtcd stops every member gracefully (SIGTERM), all at once.
func (l *Lab) StopEtcd(ctx context.Context) error {
	return l.forEachMember(func(i int) error { return l.etcdPidfile(i).stop(ctx, 15*time.Second) })
}

// KillEtcd kills every member with SIGKILL.
func (l *Lab) KillEtcd(ctx context.Context) error {
	return l.forEachMember(func(i int) error { return l.etcdPidfile(i).stop(ctx, 0) })
}

func (l *Lab) forEachMember(f func(i int) error) error {
	errs := make([]error, l.EtcdMembers)
	var wg sync.WaitGroup
	for i := 1; i <= l.EtcdMembers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i-1] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PauseEtcd freezes every member (SIGSTOP): their sockets stay open and
// requests hang, the harder outage for clients than a refused connection.
func (l *Lab) PauseEtcd() error { return l.signalEtcd(syscall.SIGSTOP) }

// ResumeEtcd lets paused members run again (SIGCONT).
func (l *Lab) ResumeEtcd() error { return l.signalEtcd(syscall.SIGCONT) }

func (l *Lab) signalEtcd(sig syscall.Signal) error {
	var errs []error
	for i := 1; i <= l.EtcdMembers; i++ {
		pid, ok := l.etcdPidfile(i).running()
		if !ok {
			errs = append(errs, fmt.Errorf("etcd member %d is not running", i))
			continue
		}
		if err := syscall.Kill(pid, sig); err != nil {
			errs = append(errs, fmt.Errorf("signal etcd member %d (%d) with %s: %w", i, pid, sig, err))
		}
	}
	return errors.Join(errs...)
}

// EtcdRunning reports whether every member's process is alive.
func (l *Lab) EtcdRunning() bool {
	for i := 1; i <= l.EtcdMembers; i++ {
		if !l.EtcdMemberRunning(i) {
			return false
		}
	}
	return true
}

// EtcdMemberRunning reports whether member i's process is alive.
func (l *Lab) EtcdMemberRunning(i int) bool { _, ok := l.etcdPidfile(i).running(); return ok }

// WaitEtcd waits until every member reports healthy on its unix socket
// (a member is healthy when it has a leader and serves a quorum read).
func (l *Lab) WaitEtcd(ctx context.Context, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 100*time.Millisecond, func() error {
		var errs []error
		for i := 1; i <= l.EtcdMembers; i++ {
			errs = append(errs, l.memberHealthy(i))
		}
		return errors.Join(errs...)
	})
}

func (l *Lab) waitEtcdMember(ctx context.Context, i int, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 100*time.Millisecond, func() error { return l.memberHealthy(i) })
}

func (l *Lab) memberHealthy(i int) error {
	if !l.EtcdMemberRunning(i) {
		return fmt.Errorf("etcd member %d is not running (see %s)", i, l.EtcdMemberLog(i))
	}
	resp, err := l.etcdHTTP(i).Get("http://etcd/health")
	if err != nil {
		return fmt.Errorf("etcd member %d health: %w", i, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("etcd member %d health: %s %s", i, resp.Status, b)
	}
	return nil
}

func (l *Lab) etcdHTTP(i int) *http.Client {
	sock := l.EtcdMemberSocket(i)
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

// EtcdClient returns an etcd v3 client connected through every member's
// unix socket. The caller closes it.
func (l *Lab) EtcdClient() (*clientv3.Client, error) {
	var eps []string
	for i := 1; i <= l.EtcdMembers; i++ {
		eps = append(eps, "unix://"+l.EtcdMemberSocket(i))
	}
	return newEtcdClient(eps)
}

func newEtcdClient(eps []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		// Lab tooling must not hang on a partitioned or paused member.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client %v: %w", eps, err)
	}
	return cli, nil
}

// EtcdctlCommand is the etcdctl command line a user runs against the lab
// (through the members' unix sockets, from any namespace).
func (l *Lab) EtcdctlCommand() string {
	var eps []string
	for i := 1; i <= l.EtcdMembers; i++ {
		eps = append(eps, "unix://"+l.EtcdMemberSocket(i))
	}
	return "etcdctl --endpoints=" + strings.Join(eps, ",")
}
