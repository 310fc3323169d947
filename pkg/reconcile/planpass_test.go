package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// planCtrl is a Planner that logs what it is asked: which keys were
// planned, which applied in which call, and which reconciled one at a time.
type planCtrl struct {
	mu         sync.Mutex
	keys       []string
	planned    []string
	applyCalls [][]string // the keys of each Apply call
	single     []string   // keys reconciled through Reconcile
	applying   bool       // an Apply is running
	overlap    bool       // a Plan ran while an Apply did
	failOnce   map[string]bool
	converged  int
}

type fakePlan struct{ key string }

func (c *planCtrl) Name() string                           { return "plan" }
func (c *planCtrl) Keys(context.Context) ([]string, error) { return c.keys, nil }
func (c *planCtrl) Converged()                             { c.mu.Lock(); c.converged++; c.mu.Unlock() }
func (c *planCtrl) Reconcile(ctx context.Context, key string) error {
	c.mu.Lock()
	c.single = append(c.single, key)
	c.mu.Unlock()
	p, err := c.Plan(ctx, key)
	if err != nil || p == nil {
		return err
	}
	return c.Apply([]context.Context{ctx}, []Plan{p})[0]
}

func (c *planCtrl) Plan(_ context.Context, key string) (Plan, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.planned = append(c.planned, key)
	c.overlap = c.overlap || c.applying
	switch key {
	case "in-sync":
		return nil, nil
	case "later":
		return nil, RequeueAfter(time.Hour, "test")
	}
	return &fakePlan{key: key}, nil
}

func (c *planCtrl) Apply(ctxs []context.Context, plans []Plan) []error {
	c.mu.Lock()
	c.applying = true
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.applying = false; c.mu.Unlock() }()
	errs := make([]error, len(plans))
	var keys []string
	for i, p := range plans {
		k := p.(*fakePlan).key
		keys = append(keys, k)
		c.mu.Lock()
		fail := c.failOnce[k]
		delete(c.failOnce, k)
		c.mu.Unlock()
		if fail {
			errs[i] = errors.New("refused")
			continue
		}
		Record(ctxs[i], "route add "+k)
	}
	c.mu.Lock()
	c.applyCalls = append(c.applyCalls, keys)
	c.mu.Unlock()
	return errs
}

// TestPlanPassBatches: a Planner's start-up pass plans the queued keys a
// batch at a time and applies each batch in one call, never while planning;
// each key's result is handled as a reconcile's: a key in sync or asking to
// be looked at later is not applied, a failed key is retried (one at a
// time, after the pass), every change is counted in the pass's summary.
func TestPlanPassBatches(t *testing.T) {
	var buf syncBuf
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	c := &planCtrl{failOnce: map[string]bool{"k0300": true}}
	n := 2*PlanBatch + 10
	for i := range n {
		c.keys = append(c.keys, fmt.Sprintf("k%04d", i))
	}
	c.keys = append(c.keys, "in-sync", "later")
	m := NewManager(0, log)
	r := m.Add(c, Options{Workers: 2, BaseBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := poll.Until(ctx, 10*time.Second, 5*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !slices.Contains(c.single, "k0300") {
			return errors.New("the failed key was not retried")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	<-r.StartPassDone()
	cancel()
	<-done

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overlap {
		t.Error("a key was planned while a batch was applied")
	}
	if c.converged != 1 {
		t.Errorf("Converged %d times, want 1", c.converged)
	}
	applied := map[string]int{}
	for i, call := range c.applyCalls {
		if len(call) > PlanBatch {
			t.Errorf("apply call %d has %d plans, more than a batch (%d)", i, len(call), PlanBatch)
		}
		for _, k := range call {
			applied[k]++
		}
	}
	// The pass: 3 batches (n+2 keys); then k0300's retry alone.
	if len(c.applyCalls) != 4 || len(c.single) != 1 {
		t.Errorf("%d apply calls (want 3 batches and the retry), %d single reconciles %v (want the retry)", len(c.applyCalls), len(c.single), c.single)
	}
	for _, k := range c.keys {
		want := 1
		switch k {
		case "in-sync", "later":
			want = 0
		case "k0300":
			want = 2
		}
		if applied[k] != want {
			t.Errorf("%s applied %d times, want %d", k, applied[k], want)
		}
	}
	var summary map[string]any
	for _, l := range logLines(t, buf.String()) {
		if l["msg"] == "start-up pass done" {
			summary = l
		}
	}
	if summary == nil {
		t.Fatalf("no summary of the pass:\n%s", buf.String())
	}
	if summary["reconciles"] != float64(n+2) || summary["changed"] != float64(n-1) || summary["errors"] != float64(1) {
		t.Errorf("summary %v: want %d reconciles, %d changed, 1 error", summary, n+2, n-1)
	}
	if !strings.Contains(buf.String(), `"msg":"reconcile failed","controller":"plan","key":"k0300"`) {
		t.Errorf("no failure line for k0300:\n%s", buf.String())
	}
}
