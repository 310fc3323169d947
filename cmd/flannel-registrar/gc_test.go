package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// gcPercent reads the runtime's GC percent (there is no getter).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// The percent is lowered until the first pass is done and then restored;
// an operator's GOGC is left alone.
func TestStartupGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	g := lowerGC(func(string) string { return "" })
	if p := gcPercent(); p != startupGCPercent {
		t.Fatalf("percent while starting = %d, want %d", p, startupGCPercent)
	}
	var settled atomic.Bool
	stop := g.restoreWhen(context.Background(), settled.Load)
	defer stop()
	if p := gcPercent(); p != startupGCPercent {
		t.Fatalf("percent before the first pass is done = %d, want %d", p, startupGCPercent)
	}
	settled.Store(true)
	if err := poll.Until(context.Background(), 10*time.Second, 10*time.Millisecond, func() error {
		if p := gcPercent(); p != 100 {
			return fmt.Errorf("percent is %d", p)
		}
		return nil
	}); err != nil {
		t.Fatalf("not restored once settled: %v", err)
	}
	stop()

	g = lowerGC(func(k string) string {
		if k == envStartupGC {
			return "30"
		}
		return ""
	})
	if p := gcPercent(); p != 30 {
		t.Fatalf("percent with %s=30 = %d", envStartupGC, p)
	}
	g.restore()
	if p := gcPercent(); p != 100 {
		t.Fatalf("percent after restore = %d, want 100", p)
	}

	debug.SetGCPercent(70)
	g = lowerGC(func(k string) string {
		if k == "GOGC" {
			return "70"
		}
		return ""
	})
	g.restoreWhen(context.Background(), func() bool { return false })()
	g.restore()
	if p := gcPercent(); p != 70 {
		t.Fatalf("percent with GOGC=70 = %d, want it left alone", p)
	}
}
