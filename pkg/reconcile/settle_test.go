package reconcile

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestSettle(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSettle(2 * time.Second)
	s.now = func() time.Time { return now }
	if ok, wait := s.Ready("k"); ok || wait != 2*time.Second {
		t.Fatalf("first call: %v %s, want not ready for 2s", ok, wait)
	}
	now = now.Add(1500 * time.Millisecond)
	if ok, wait := s.Ready("k"); ok || wait != 500*time.Millisecond {
		t.Fatalf("after 1.5s: %v %s", ok, wait)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := s.Ready("k"); !ok {
		t.Fatal("not ready after the grace period")
	}
	s.Clear("k") // wanted again: the clock starts over
	if ok, _ := s.Ready("k"); ok {
		t.Fatal("ready right after Clear")
	}
	if ok, _ := NewSettle(-1).Ready("k"); !ok {
		t.Fatal("a negative grace must not wait")
	}
	if NewSettle(0).Grace != DefaultGrace {
		t.Fatal("0 must mean DefaultGrace")
	}
}

// waitCtrl asks to be requeued once, then succeeds.
type waitCtrl struct{ calls atomic.Int32 }

func (c *waitCtrl) Name() string                           { return "wait" }
func (c *waitCtrl) Keys(context.Context) ([]string, error) { return []string{"k"}, nil }
func (c *waitCtrl) Reconcile(context.Context, string) error {
	if c.calls.Add(1) == 1 {
		return RequeueAfter(50*time.Millisecond, "settling")
	}
	return nil
}

// A RequeueError reconciles the key again after the delay and is not a
// failure; one-shot mode does not report it as an error.
func TestRequeueAfter(t *testing.T) {
	c := &waitCtrl{}
	r := NewRunner(c, Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	r.Enqueue("k", "test")
	deadline := time.After(5 * time.Second)
	for c.calls.Load() < 2 {
		select {
		case <-deadline:
			t.Fatalf("not reconciled again: %d calls", c.calls.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("reconciled again after %s, before the delay", d)
	}
	if s := r.Stats(); s.Errors != 0 {
		t.Errorf("a requeue counted as an error: %+v", s)
	}
	m := NewManager(0, slog.New(slog.DiscardHandler))
	m.Add(&waitCtrl{}, Options{})
	if err := m.Once(context.Background()); err != nil {
		t.Errorf("once reported a requeue as an error: %v", err)
	}
}
