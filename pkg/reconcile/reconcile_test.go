package reconcile

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// fakeCtrl fails each key a given number of times, then records a change.
type fakeCtrl struct {
	mu       sync.Mutex
	failures map[string]int
	calls    map[string]int
	active   map[string]bool
	overlap  bool
	done     chan string
}

func newFake() *fakeCtrl {
	return &fakeCtrl{failures: map[string]int{}, calls: map[string]int{}, active: map[string]bool{}, done: make(chan string, 100)}
}

func (f *fakeCtrl) Name() string { return "fake" }
func (f *fakeCtrl) Keys(context.Context) ([]string, error) {
	return []string{"a", "b"}, errors.New("partial list")
}

func (f *fakeCtrl) Reconcile(ctx context.Context, key string) error {
	f.mu.Lock()
	if f.active[key] {
		f.overlap = true
	}
	f.active[key] = true
	f.calls[key]++
	fail := f.failures[key] > 0
	if fail {
		f.failures[key]--
	}
	f.mu.Unlock()
	time.Sleep(time.Millisecond) // widen the window in which a second worker could overlap
	f.mu.Lock()
	f.active[key] = false
	f.mu.Unlock()
	if fail {
		return errors.New("boom")
	}
	Record(ctx, "did "+key)
	f.done <- key
	return nil
}

func TestRunnerRetriesWithBackoffAndLogsChanges(t *testing.T) {
	var buf syncBuf
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFake()
	f.failures["a"] = 3
	r := NewRunner(f, Options{Workers: 4, BaseBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	r.Enqueue("a", "test:first")
	r.Enqueue("a", "test:second") // deduplicated
	select {
	case k := <-f.done:
		if k != "a" {
			t.Fatalf("got %s", k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("key a never succeeded")
	}
	cancel()
	wg.Wait()
	st := r.Stats()
	if st.Errors != 3 || st.Changed != 1 || st.Changes != 1 {
		t.Fatalf("stats %+v, want 3 errors then 1 change", st)
	}
	out := buf.String()
	if !strings.Contains(out, `"trigger":"test:first"`) || !strings.Contains(out, `"trigger":"retry"`) ||
		!strings.Contains(out, `"changes":["did a"]`) || !strings.Contains(out, `"msg":"reconciled"`) {
		t.Fatalf("log lines missing fields:\n%s", out)
	}
	if f.overlap {
		t.Fatal("one key was reconciled by two workers at once")
	}
}

func TestManagerResyncAndOnce(t *testing.T) {
	m := NewManager(0, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	f := newFake()
	m.Add(f, Options{})
	err := m.Resync(context.Background(), "resync")
	if err == nil || !strings.Contains(err.Error(), "partial list") {
		t.Fatalf("resync error not reported: %v", err)
	}
	if n := m.Runner("fake").Len(); n != 2 {
		t.Fatalf("queued %d keys, want 2 (listed keys are queued despite the error)", n)
	}
	f.failures["b"] = 1
	err = m.Once(context.Background())
	if err == nil || !strings.Contains(err.Error(), "fake b: boom") {
		t.Fatalf("once error: %v", err)
	}
	if f.calls["a"] != 1 || f.calls["b"] != 1 {
		t.Fatalf("once calls %v", f.calls)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestManagerOnResync: the hooks run on every periodic resync.
func TestManagerOnResync(t *testing.T) {
	m := NewManager(20*time.Millisecond, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	m.Add(newFake(), Options{})
	calls := make(chan string, 100)
	m.OnResync(func(trigger string) { calls <- trigger })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	for range 2 {
		select {
		case tr := <-calls:
			if tr != "resync" {
				t.Errorf("hook trigger %q, want resync", tr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("hook not called by the periodic resync")
		}
	}
	cancel()
	<-done
}

// onceCtrl lists keys and counts reconciles per key; its Keys waits a little
// for a first reconcile, so that a resync running alongside the workers
// would see one done (and re-queue it).
type onceCtrl struct {
	keys  []string
	first chan struct{}
	once  sync.Once
	mu    sync.Mutex
	calls map[string]int
}

func (c *onceCtrl) Name() string { return "once" }
func (c *onceCtrl) Keys(ctx context.Context) ([]string, error) {
	select {
	case <-c.first:
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond): // no worker runs yet: the intended order
	}
	return c.keys, nil
}

func (c *onceCtrl) Reconcile(_ context.Context, key string) error {
	c.mu.Lock()
	c.calls[key]++
	c.mu.Unlock()
	c.once.Do(func() { close(c.first) })
	return nil
}

// TestManagerStartReconcilesEachKeyOnce: keys queued before Run (the initial
// listing) and listed again by the start resync are reconciled once each.
func TestManagerStartReconcilesEachKeyOnce(t *testing.T) {
	m := NewManager(0, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	c := &onceCtrl{keys: []string{"a", "b", "c", "d"}, first: make(chan struct{}), calls: map[string]int{}}
	m.Add(c, Options{Workers: 1})
	for _, k := range c.keys {
		m.Enqueue("once", k, "listed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// One worker takes keys in order: once the sentinel, queued after the
	// start resync finished, is done, so is everything queued before it.
	if err := poll.Until(ctx, 10*time.Second, 5*time.Millisecond, func() error {
		if m.LastResync().IsZero() {
			return errors.New("start resync not done")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m.Enqueue("once", "sentinel", "test")
	if err := poll.Until(ctx, 10*time.Second, 5*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.calls["sentinel"] == 0 {
			return errors.New("sentinel not reconciled")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.keys {
		if c.calls[k] != 1 {
			t.Errorf("key %s reconciled %d times at start, want 1 (calls %v)", k, c.calls[k], c.calls)
		}
	}
}
