package main

// This file: the daemon's GC percent.

import "runtime/debug"

// gcPercent is the daemon's GC percent unless the operator sets GOGC.
// With Go's default (100) the heap grows to twice the live heap before a
// collection, and RSS with it. Measured with hack/benchscale at 10,000
// subnets, 45 s after convergence (-hold 45s): peak RSS 75 MiB (leases)
// and 69 MiB (records) with 100 after the first pass, 62 and 64 MiB with
// 40 throughout; cold-start CPU the same within the runs' spread. The
// daemon allocates little in steady state, so collecting more often there
// costs next to nothing.
const gcPercent = 40

// setGCPercent sets gcPercent unless the operator set GOGC (then the
// runtime's percent is theirs and is left alone). It returns the function
// that puts back the percent there was (for in-process callers: tests).
func setGCPercent(getenv func(string) string) (restore func()) {
	if getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(gcPercent)
	return func() { debug.SetGCPercent(prev) }
}
