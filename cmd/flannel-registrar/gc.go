package main

// This file: a lower GC percent while the daemon starts.

import (
	"context"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// startupGCPercent is the GC percent from start until the first pass is
// done. A cold start at 10,000 subnets builds its whole state at once:
// with Go's default (100) the heap grows to twice the live heap of that
// burst, and peak RSS with it (measured with hack/benchscale). Collecting
// more often only then costs a fraction of a second of CPU once; in steady
// state the default applies again (little is allocated there).
const startupGCPercent = 40

// settleCheck is how often the end of the first pass is checked for.
const settleCheck = 100 * time.Millisecond

// startupGC holds the GC percent lowered while the daemon starts.
type startupGC struct {
	prev    int
	lowered bool
	once    sync.Once
}

// envStartupGC overrides startupGCPercent. Like the profile variables it is
// not a setting (not in --help): benchmarks use it to weigh the trade.
const envStartupGC = "FR_STARTUP_GOGC"

// lowerGC sets startupGCPercent (or FR_STARTUP_GOGC's), unless the operator
// set GOGC (then the runtime's percent is theirs and is left alone).
func lowerGC(getenv func(string) string) *startupGC {
	if getenv("GOGC") != "" {
		return &startupGC{}
	}
	percent := startupGCPercent
	if n, err := strconv.Atoi(getenv(envStartupGC)); err == nil && n > 0 {
		percent = n
	}
	return &startupGC{prev: debug.SetGCPercent(percent), lowered: true}
}

// restore sets the percent there was before lowerGC; later calls do nothing.
func (g *startupGC) restore() {
	g.once.Do(func() {
		if g.lowered {
			debug.SetGCPercent(g.prev)
		}
	})
}

// restoreWhen restores the percent once settled reports true; the returned
// function stops the check (restoring too) and joins it.
func (g *startupGC) restoreWhen(ctx context.Context, settled func() bool) (stop func()) {
	if !g.lowered {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer g.restore()
		t := time.NewTicker(settleCheck)
		defer t.Stop()
		for !settled() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
