// Package resubscribe runs a kernel subscription session again each time it
// breaks, with exponential backoff between sessions, until its context ends.
// The netlink and firewall watchers share it: a subscription that breaks is
// re-made, never given up on.
package resubscribe

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Loop calls session until ctx is done. After a session returns (broken)
// it calls onBroken (when set) with its error and the delay before the next
// one. A session that ran longer than maxDelay resets the backoff: a break
// after a long run is news, not a loop. Loop returns when ctx is done.
func Loop(ctx context.Context, minDelay, maxDelay time.Duration, session func(context.Context) error, onBroken func(err error, retryIn time.Duration)) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = minDelay, maxDelay, 0
	b.Reset()
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		start := time.Now()
		err := session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxDelay {
			b.Reset()
		}
		delay := b.NextBackOff()
		if onBroken != nil {
			onBroken(err, delay)
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}
