package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

// counter counts the requests one etcd client sends, by gRPC method, and
// the progress requests on its watch streams; with blockRange set, every
// Range fails before it leaves the client.
type counter struct {
	mu         sync.Mutex
	unary      map[string]int
	progress   int
	blockRange atomic.Bool
}

func (c *counter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if method == "progress" {
		return c.progress
	}
	return c.unary[method]
}

// countingClient returns a client of srv whose requests c counts.
func countingClient(t *testing.T, srv *etcdtest.Server, c *counter) *clientv3.Client {
	t.Helper()
	c.unary = map[string]int{}
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		name := method[strings.LastIndex(method, "/")+1:]
		c.mu.Lock()
		c.unary[name]++
		c.mu.Unlock()
		if name == "Range" && c.blockRange.Load() {
			return status.Error(codes.Unavailable, "test: Range blocked")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &countingStream{ClientStream: s, c: c}, nil
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

type countingStream struct {
	grpc.ClientStream
	c *counter
}

func (s *countingStream) SendMsg(m any) error {
	if r, ok := m.(*etcdserverpb.WatchRequest); ok && r.GetProgressRequest() != nil {
		s.c.mu.Lock()
		s.c.progress++
		s.c.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

// waitProgress waits until the watcher sent n more progress requests than
// it had at from (a count of intervals, not a duration).
func waitProgress(t *testing.T, c *counter, from, n int) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := c.get("progress") - from; got < n {
			return fmt.Errorf("%d progress requests sent, want %d", got, n)
		}
		return nil
	})
}

// In steady state (nothing written since the list) the watcher sends etcd
// only progress requests, which etcd answers: no Range, LastAnswered
// advancing, no re-list. Flannel's config comes with the list and its
// change with the watch.
func TestSteadyStateSendsNoReads(t *testing.T) {
	c := &counter{}
	var (
		cfgMu  sync.Mutex
		config []string
	)
	h := newHarness(t) // its watcher is replaced by one with a counting client
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	h.put(t, keys.FlannelConfig(), `{"Network":"10.5.0.0/16"}`)
	w, err := etcdwatch.New(etcdwatch.Options{
		Client: countingClient(t, h.srv, c), Keys: keys, Store: h.store,
		HeaderCheckInterval: 100 * time.Millisecond,
		OnRelist:            func(reason string) { h.rec.add(&h.rec.relists, reason) },
		OnFlannelConfig: func(v []byte) {
			cfgMu.Lock()
			defer cfgMu.Unlock()
			config = append(config, string(v))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	h.run(t)
	synced(t, h)
	// The first progress answer ends the header reads of the watch's start.
	waitProgress(t, c, 0, 5)
	ranges, from, answered := c.get("Range"), c.get("progress"), h.w.LastAnswered()
	waitProgress(t, c, from, 30)
	if got := c.get("Range") - ranges; got != 0 {
		t.Errorf("%d Range requests during %d progress intervals of steady state, want 0", got, c.get("progress")-from)
	}
	if !h.w.LastAnswered().After(answered) {
		t.Errorf("LastAnswered stayed at %s: progress answers do not count", answered)
	}
	if n := h.rec.count(&h.rec.relists); n != 0 {
		t.Errorf("re-listed %d times in steady state: %v", n, h.rec.snapshot(&h.rec.relists))
	}
	cfgMu.Lock()
	got := strings.Join(config, ";")
	cfgMu.Unlock()
	if got != `{"Network":"10.5.0.0/16"}` {
		t.Errorf("flannel config reports %q, want the listed value once", got)
	}
	// A change and a delete of flannel's config arrive by the watch.
	h.put(t, keys.FlannelConfig(), `{"Network":"10.6.0.0/16"}`)
	h.del(t, keys.FlannelConfig())
	testutil.Eventually(t, 10*time.Second, func() error {
		cfgMu.Lock()
		defer cfgMu.Unlock()
		if got, want := strings.Join(config, ";"), `{"Network":"10.5.0.0/16"};{"Network":"10.6.0.0/16"};`; got != want {
			return fmt.Errorf("flannel config reports %q, want %q", got, want)
		}
		return nil
	})
	if got := c.get("Range") - ranges; got != 0 {
		t.Errorf("%d Range requests for flannel config changes, want 0 (the watch carries them)", got)
	}
}

// A progress answer from another cluster (etcd replaced by a fresh one on
// the same address, whose revision passed the watcher's) is a history loss
// on its own: every Range of the watcher fails meanwhile, so the header
// read cannot have seen it.
func TestHistoryLossFromProgressAnswer(t *testing.T) {
	c := &counter{}
	h := newHarness(t)
	for i := range 5 {
		h.put(t, sub(fmt.Sprintf("10.5.%d.0/24", 100+i)), vxlanLease)
	}
	w, err := etcdwatch.New(etcdwatch.Options{
		Client: countingClient(t, h.srv, c), Keys: keys, Store: h.store,
		HeaderCheckInterval: 100 * time.Millisecond,
		OnRelist:            func(reason string) { h.rec.add(&h.rec.relists, reason) },
		OnHistoryLost: func(l etcdwatch.HistoryLoss) {
			h.rec.add(&h.rec.losses, fmt.Sprintf("%s|%d>%d leases=%d", l.Reason, l.Applied, l.Revision, len(h.store.Leases())))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	h.run(t)
	synced(t, h)
	waitProgress(t, c, 0, 5)
	applied := h.w.Stats().Revision
	oldCluster := clusterID(t, h.cli)

	c.blockRange.Store(true)
	u, err := url.Parse(h.srv.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Stop()
	other, err := etcdtest.StartServer(etcdtest.Options{Dir: t.TempDir(), ClientPort: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Stop)
	ocli := other.Client(t)
	if id := clusterID(t, ocli); id == oldCluster {
		t.Fatalf("the fresh etcd has the old cluster ID %x", id)
	}
	// Outside both prefixes: no event, only progress answers (etcd answers
	// none for a watch beyond its revision).
	for rev := int64(0); rev <= applied+2; {
		resp, err := ocli.Put(context.Background(), "/elsewhere/key", "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if h.rec.count(&h.rec.losses) == 0 {
			return errors.New("no history loss reported")
		}
		return nil
	})
	losses := h.rec.snapshot(&h.rec.losses)
	if len(losses) != 1 || !strings.HasPrefix(losses[0], "etcd cluster ID changed") || !strings.HasSuffix(losses[0], "leases=5") {
		t.Errorf("history losses %q: want one \"etcd cluster ID changed ...\", reported with the 5 leases still in the store", losses)
	}
	c.blockRange.Store(false)
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(h.store.Leases()); n != 0 {
			return fmt.Errorf("%d leases in the store, want none (the new etcd has none)", n)
		}
		return nil
	})
}

func clusterID(t *testing.T, cli *clientv3.Client) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.ClusterId
}
