package main

// This file: debug-only profiles for benchmarks (hack/benchscale -profile).

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// Profile environment variables. They are not settings (not in --help, no
// flag): only benchmarks use them, to see where a cold start goes.
const (
	envCPUProfile  = "FR_CPUPROFILE"  // path: CPU profile from start to exit
	envHeapProfile = "FR_HEAPPROFILE" // path: heap profile (in use and allocated) at exit
)

// startProfiles starts what getenv asks for and returns the function that
// writes the profiles; it is called once, at exit, while the daemon's state
// is still reachable (so the heap profile's in-use figures show it).
// Profiles are opened before the privilege drop, so an unprivileged daemon
// can write them.
func startProfiles(getenv func(string) string) (stop func() error, err error) {
	var cpu, heap *os.File
	stop = func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
			cpu = nil
		}
		if heap != nil {
			runtime.GC() // in-use figures as of now
			errs = append(errs, pprof.Lookup("heap").WriteTo(heap, 0), heap.Close())
			heap = nil
		}
		return errors.Join(errs...)
	}
	if p := getenv(envCPUProfile); p != "" {
		if cpu, err = os.Create(p); err != nil {
			return stop, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
		if err = pprof.StartCPUProfile(cpu); err != nil {
			_ = cpu.Close()
			cpu = nil
			return stop, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
	}
	if p := getenv(envHeapProfile); p != "" {
		if heap, err = os.Create(p); err != nil {
			return stop, fmt.Errorf("%s: %w", envHeapProfile, err)
		}
	}
	return stop, nil
}
