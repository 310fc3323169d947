package main

import (
	"runtime/debug"
	"testing"
)

// currentGCPercent reads the runtime's GC percent (there is no getter).
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// The daemon runs at gcPercent and puts the percent back on return; an
// operator's GOGC is left alone.
func TestGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	restore := setGCPercent(func(string) string { return "" })
	if p := currentGCPercent(); p != gcPercent {
		t.Fatalf("percent while running = %d, want %d", p, gcPercent)
	}
	restore()
	if p := currentGCPercent(); p != 100 {
		t.Fatalf("percent after restore = %d, want 100", p)
	}

	debug.SetGCPercent(70)
	restore = setGCPercent(func(k string) string {
		if k == "GOGC" {
			return "70"
		}
		return ""
	})
	restore()
	if p := currentGCPercent(); p != 70 {
		t.Fatalf("percent with GOGC=70 = %d, want it left alone", p)
	}
}
