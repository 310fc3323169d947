package resubscribe

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLoopRetriesWithGrowingDelayUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	broken := errors.New("subscription broke")
	var sessions int
	var delays []time.Duration
	session := func(context.Context) error {
		sessions++
		return broken
	}
	onBroken := func(err error, d time.Duration) {
		if !errors.Is(err, broken) {
			t.Errorf("onBroken got %v, want the session's error", err)
		}
		delays = append(delays, d)
		if len(delays) == 4 {
			cancel()
		}
	}
	done := make(chan struct{})
	go func() { Loop(ctx, time.Millisecond, 50*time.Millisecond, session, onBroken); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not return after its context was cancelled")
	}
	if sessions != 4 || len(delays) != 4 {
		t.Fatalf("sessions %d, delays %v: want 4 each", sessions, delays)
	}
	for _, d := range delays {
		if d <= 0 || d > 50*time.Millisecond {
			t.Errorf("delay %s outside (0, 50ms]", d)
		}
	}
}

func TestLoopReturnsWhenSessionEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	Loop(ctx, time.Millisecond, time.Second, func(ctx context.Context) error {
		calls++
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}, func(error, time.Duration) { t.Error("onBroken called for a session ended by its context") })
	if calls != 1 {
		t.Fatalf("session ran %d times, want 1", calls)
	}
}
