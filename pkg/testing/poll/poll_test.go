package poll

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	if err := Until(context.Background(), time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("err %v after %d calls, want nil after 3", err, n)
	}
	errLast := errors.New("still false")
	err := Until(context.Background(), 20*time.Millisecond, time.Millisecond, func() error { return errLast })
	if !errors.Is(err, errLast) || !strings.HasPrefix(err.Error(), "after 20ms") {
		t.Fatalf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Until(ctx, time.Minute, time.Millisecond, func() error { return errLast })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errLast) {
		t.Fatalf("cancelled: %v", err)
	}
}
