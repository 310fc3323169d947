// Package poll waits for a condition: the one polling loop shared by the
// tests, the lab and the benchmarks (the daemon itself reacts to events and
// never polls).
package poll

import (
	"context"
	"fmt"
	"time"
)

// Until calls check every interval until it returns nil, timeout passes or
// ctx ends; it then returns check's last error, wrapped with why it stopped.
func Until(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-deadline.C:
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}
