// Package etcdtest runs a real, single-member etcd server in-process
// (go.etcd.io/etcd/server/v3/embed) for tests and for the lab.
//
// Start(t) gives a server on 127.0.0.1 with free ports and a data dir in
// t.TempDir(), stopped when the test ends. Stop and Restart keep the data dir
// and the ports, so a client created before Stop reconnects by itself after
// Restart, as a daemon's client does when a real etcd comes back.
//
// Programs that are not tests (the lab) use StartServer with explicit options.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// startTimeout bounds how long a member may take to become ready.
const startTimeout = 30 * time.Second

// portAttempts is how often Start picks new free ports when another process
// took one between picking and binding.
const portAttempts = 5

// Options configure StartServer.
type Options struct {
	Dir        string // data dir (required)
	Host       string // listen address, default 127.0.0.1
	ClientPort int    // 0: pick a free port
	PeerPort   int    // 0: pick a free port
	Name       string // member name, default "default"
}

// Server is one embedded etcd member. Its methods are safe for concurrent use.
type Server struct {
	mu   sync.Mutex // guards etcd
	opts Options
	etcd *embed.Etcd
}

// Start starts a server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	var lastErr error
	for range portAttempts {
		s, err := StartServer(Options{Dir: t.TempDir()})
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err
		if !isAddrInUse(err) {
			break
		}
	}
	t.Fatalf("start embedded etcd: %v", lastErr)
	return nil
}

// StartServer starts a member with opts; free ports are picked for zero ports.
// The caller must call Stop.
func StartServer(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("etcdtest: Options.Dir is required")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Name == "" {
		opts.Name = "default"
	}
	var err error
	if opts.ClientPort == 0 {
		if opts.ClientPort, err = freePort(opts.Host); err != nil {
			return nil, err
		}
	}
	if opts.PeerPort == 0 {
		if opts.PeerPort, err = freePort(opts.Host); err != nil {
			return nil, err
		}
	}
	s := &Server{opts: opts}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = s.opts.Name
	cfg.Dir = s.opts.Dir
	cu := s.url(s.opts.ClientPort)
	pu := s.url(s.opts.PeerPort)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Silent: errors that matter come back from StartEtcd or Err; the rest
	// is shutdown noise ("use of closed network connection").
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd on %s: %w", cu.Host, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd on %s failed while starting: %w", cu.Host, err)
	case <-time.After(startTimeout):
		e.Close()
		return fmt.Errorf("etcd on %s not ready after %s", cu.Host, startTimeout)
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

func (s *Server) url(port int) url.URL {
	return url.URL{Scheme: "http", Host: net.JoinHostPort(s.opts.Host, strconv.Itoa(port))}
}

// Endpoints returns the client URLs, e.g. ["http://127.0.0.1:40123"]. They do
// not change across Restart.
func (s *Server) Endpoints() []string {
	u := s.url(s.opts.ClientPort)
	return []string{u.String()}
}

// Dir returns the data dir.
func (s *Server) Dir() string { return s.opts.Dir }

// Client returns a client of this server, closed when t ends. It logs nothing
// (its retries while the server is stopped are expected in tests).
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.NewClient()
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// NewClient returns a quiet client of this server; the caller closes it. It
// reconnects with the daemon's backoff (100ms growing to 2s, as
// cmd/flannel-registrar/app dials), not gRPC's default that grows to two
// minutes, so that tests of what happens once etcd is back measure the
// code, not the reconnect backoff.
func (s *Server) NewClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
}

// Stop stops the server and keeps its data; calling it twice is fine. With
// open watch streams it takes etcd's graceful-stop timeout (about 7s) before
// it closes them, as a real etcd does.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Running says whether the server is started.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.etcd != nil
}

// Restart stops the server if it runs and starts it again on the same data
// dir and ports (listeners use SO_REUSEADDR, so the ports are free again at
// once unless another process took them).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("restart embedded etcd: %v", err)
	}
}

// Wipe stops the server if it runs, deletes its data dir and starts it again
// empty on the same ports, as an etcd restarted with a lost or fresh data
// directory: same member name, peer URL and cluster token, so the same
// cluster ID, but its revisions start again from 1.
func (s *Server) Wipe(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := os.RemoveAll(s.opts.Dir); err != nil {
		t.Fatalf("wipe etcd data dir: %v", err)
	}
	if err := os.MkdirAll(s.opts.Dir, 0o700); err != nil {
		t.Fatalf("recreate etcd data dir: %v", err)
	}
	if err := s.start(); err != nil {
		t.Fatalf("restart embedded etcd on an empty data dir: %v", err)
	}
}

// Compact compacts the key-value history up to rev (physically, so that
// watches from older revisions fail with ErrCompacted at once).
func (s *Server) Compact(t testing.TB, rev int64) {
	t.Helper()
	err := s.call(t, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
		return err
	})
	if err != nil {
		t.Fatalf("compact to revision %d: %v", rev, err)
	}
}

// Revision returns the current revision of the store.
func (s *Server) Revision(t testing.TB) int64 {
	t.Helper()
	var rev int64
	err := s.call(t, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, "\x00", clientv3.WithCountOnly())
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	if err != nil {
		t.Fatalf("read revision: %v", err)
	}
	return rev
}

// call runs fn with a client of its own, closed right after, so that it does
// not depend on the state of the test's clients, and a 10s deadline.
func (s *Server) call(t testing.TB, fn func(context.Context, *clientv3.Client) error) error {
	t.Helper()
	cli, err := s.NewClient()
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fn(ctx, cli)
}

// freePort asks the kernel for a free TCP port on host. Another process may
// take it before etcd binds it; Start retries in that case.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}
