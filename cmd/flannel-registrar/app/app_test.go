package app

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/controllers/forwarding"
	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
)

func TestWarnsWhenFlanneldPublishesAnotherPublicIP(t *testing.T) {
	var buf bytes.Buffer
	a := &App{log: slog.New(slog.NewJSONHandler(&buf, nil)), store: state.New(), mismatch: map[string]bool{}}
	mac := net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, 0x0b}
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: mac, Local: netip.MustParseAddr("198.51.100.11")}, "test")
	a.store.Subscribe(a.checkOwnLease)
	lease := func(subnet, ip string, m net.HardwareAddr) state.Lease {
		return state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: flannel.NewVXLAN(netip.MustParseAddr(ip), 1, m),
			PublicIP: netip.MustParseAddr(ip), VNI: 1, VtepMAC: m}
	}
	// A peer's lease and our own lease with our address: no warning.
	a.store.PutLease(lease("198.18.2.0/24", "198.51.100.12", net.HardwareAddr{2, 0, 0, 0, 0, 2}), "etcd")
	a.store.PutLease(lease("198.18.1.0/24", "198.51.100.11", mac), "etcd")
	if buf.Len() != 0 {
		t.Fatalf("unexpected warning: %s", buf.String())
	}
	// flanneld re-published our VTEP under a NAT address: one warning, not one per event.
	a.store.PutLease(lease("198.18.1.0/24", "203.0.113.7", mac), "etcd")
	a.store.PutLease(lease("198.18.3.0/24", "203.0.113.7", mac), "etcd")
	if n := strings.Count(buf.String(), "set FLANNELD_PUBLIC_IP"); n != 1 {
		t.Fatalf("want one warning, got %d: %s", n, buf.String())
	}
	// With the override set to flanneld's address, no warning.
	buf.Reset()
	a.cfg = config.Config{PublicIP: netip.MustParseAddr("203.0.113.7")}
	a.store.PutLease(lease("198.18.4.0/24", "203.0.113.7", mac), "etcd")
	if buf.Len() != 0 {
		t.Fatalf("warned despite FLANNELD_PUBLIC_IP: %s", buf.String())
	}
}

// blockingCtrl is a subnets controller whose Keys (the etcd read of a
// resync) blocks until release is closed.
type blockingCtrl struct {
	calls   chan struct{}
	release chan struct{}
}

func (c *blockingCtrl) Name() string                            { return subnets.Name }
func (c *blockingCtrl) Reconcile(context.Context, string) error { return nil }
func (c *blockingCtrl) Keys(ctx context.Context) ([]string, error) {
	c.calls <- struct{}{}
	select {
	case <-c.release:
	case <-ctx.Done():
	}
	return nil, nil
}

// TestLeaseLostDoesNotBlock: the registry calls OnLeaseLost on its
// keep-alive goroutine. The resync it leads to reads etcd (here: blocks for
// ever); the hook must return at once anyway, every time, and the resync
// must still happen, on the app's own goroutine.
func TestLeaseLostDoesNotBlock(t *testing.T) {
	a := &App{leaseLost: make(chan struct{}, 1)}
	c, _ := runBlocking(t, a)

	returned := make(chan struct{})
	go func() {
		for range 3 { // the first starts a resync that blocks; the others must not wait for it
			a.onLeaseLost("registration lease")
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(2 * time.Second):
		t.Fatal("OnLeaseLost blocked on the resync it asked for")
	}
	select {
	case <-c.calls:
	case <-time.After(2 * time.Second):
		t.Fatal("the lease loss did not lead to a resync of the subnets controller")
	}
}

// runBlocking gives a (its logger, manager and synced filled in here) a
// blockingCtrl as the subnets controller and runs its deferred work until
// the test ends; it returns the controller and the log's buffer.
func runBlocking(t *testing.T, a *App) (*blockingCtrl, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	a.log = slog.New(slog.NewJSONHandler(&syncWriter{w: &buf}, nil))
	a.mgr = reconcile.NewManager(0, a.log)
	a.synced = make(chan struct{})
	close(a.synced)
	c := &blockingCtrl{calls: make(chan struct{}, 10), release: make(chan struct{})}
	a.mgr.Add(c, reconcile.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runDeferred(ctx); close(done) }()
	t.Cleanup(func() { close(c.release); cancel(); <-done })
	return c, &buf
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestWarnsAboutPlainHTTPPassword: New logs the configuration's warnings
// (an etcd password over http://) before anything else.
func TestWarnsAboutPlainHTTPPassword(t *testing.T) {
	srv := etcdtest.Start(t) // without auth: the client's log-in is a no-op
	cfg, err := config.LoadWith([]string{"--etcd-username=root", "--etcd-password=x", "--host-name=h1",
		"--etcd-endpoint=" + srv.Endpoints()[0]}, nil, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf syncWriter
	buf.w = &bytes.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(&buf, nil)), "test")
	if err != nil {
		t.Skipf("cannot build the app here: %v", err)
	}
	defer a.Close()
	buf.mu.Lock()
	defer buf.mu.Unlock()
	if out := buf.w.String(); !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, srv.Endpoints()[0]+" are not https") {
		t.Errorf("no warning about the password over http:\n%s", out)
	}
}

// countingCtrl records the keys queued for it.
type countingCtrl struct {
	name string
	mu   sync.Mutex
	keys []string
}

func (c *countingCtrl) Name() string                           { return c.name }
func (c *countingCtrl) Keys(context.Context) ([]string, error) { return nil, nil }
func (c *countingCtrl) Reconcile(_ context.Context, key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, key)
	return nil
}

// TestConflictReevaluatesForwarding: a registration conflict appearing or
// clearing queues the forwarding controller's key, so that the network's
// rules go and come back at once, not at the next resync.
func TestConflictReevaluatesForwarding(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(&syncWriter{w: &bytes.Buffer{}}, nil))
	a := &App{log: log, mgr: reconcile.NewManager(0, log)}
	fwd := &countingCtrl{name: forwarding.Name}
	a.mgr.Add(fwd, reconcile.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.mgr.Runner(forwarding.Name).Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	ce := registry.ConflictError{Network: "app1", Subnet: netip.MustParsePrefix("198.19.6.0/24"), Claimant: "host h2 network web"}
	for i, hook := range []func(registry.ConflictError){a.onConflict, a.onConflictCleared} {
		deadline := time.Now().Add(2 * time.Second)
		hook(ce)
		for {
			fwd.mu.Lock()
			n := len(fwd.keys)
			fwd.mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("hook %d: forwarding reconciled %d times, want %d", i, n, i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if fwd.keys[0] != forwarding.Key || fwd.keys[1] != forwarding.Key {
		t.Errorf("forwarding keys %q, want %q twice", fwd.keys, forwarding.Key)
	}
}
