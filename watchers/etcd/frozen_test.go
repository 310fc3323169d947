package etcd_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// freezer is a TCP proxy in front of etcd that can freeze: it then keeps
// its connections open and forwards nothing, as a member whose process is
// stopped while its kernel still acknowledges.
type freezer struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{} // closed when not frozen any more
	conns  []net.Conn
	closed bool
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thaw: make(chan struct{})}
	f.wg.Go(f.accept)
	t.Cleanup(f.close)
	return f
}

func (f *freezer) url() string { return "http://" + f.ln.Addr().String() }

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !f.track(c, up) {
			return
		}
		f.wg.Go(func() { f.pipe(up, c) })
		f.wg.Go(func() { f.pipe(c, up) })
	}
}

func (f *freezer) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	f.conns = append(f.conns, cs...)
	return true
}

// pipe copies src to dst, holding every chunk while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thaw, frozen := f.thaw, f.frozen
			f.mu.Unlock()
			if frozen {
				<-thaw
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) setFrozen(frozen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if frozen == f.frozen {
		return
	}
	f.frozen = frozen
	if !frozen {
		close(f.thaw)
		f.thaw = make(chan struct{})
	}
}

func (f *freezer) close() {
	f.setFrozen(false)
	f.mu.Lock()
	f.closed = true
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	f.wg.Wait()
}

// The member serving the watch freezes while another one answers: the
// stream goes silent, the header read (which runs only then) is answered
// through the other endpoint, and the watcher gives up the stream ("watch
// stream silent") instead of waiting for gRPC's keep-alive.
func TestFrozenMemberLeft(t *testing.T) {
	h := newHarness(t)
	u, err := url.Parse(h.srv.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	fz := startFreezer(t, u.Host)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{fz.url()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	w, err := etcdwatch.New(etcdwatch.Options{
		Client: cli, Keys: keys, Store: h.store,
		HeaderCheckInterval: 100 * time.Millisecond, ListTimeout: 2 * time.Second,
		OnRelist: func(reason string) { h.rec.add(&h.rec.relists, reason) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	h.run(t)
	synced(t, h)
	// The stream answers progress requests (LastAnswered moves with them),
	// then a second endpoint, straight to etcd, joins; the watch stays on
	// the first one.
	first := h.w.LastAnswered()
	testutil.Eventually(t, 30*time.Second, func() error {
		if !h.w.LastAnswered().After(first) {
			return errors.New("no answer on the watch stream yet")
		}
		return nil
	})
	cli.SetEndpoints(fz.url(), h.srv.Endpoints()[0])
	fz.setFrozen(true)
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, r := range h.rec.snapshot(&h.rec.relists) {
			if strings.HasPrefix(r, "watch stream silent") {
				return nil
			}
		}
		return fmt.Errorf("no re-list for a silent stream: %q", h.rec.snapshot(&h.rec.relists))
	})
	fz.setFrozen(false)
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, ok := h.store.Lease(netip.MustParsePrefix("10.5.35.0/24")); !ok {
			return errors.New("lease written after the freeze not in the store")
		}
		return nil
	})
}
