package main

// This file: debug-only profiles for benchmarks (hack/benchscale -profile).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"time"
)

// Profile environment variables. They are not settings (not in --help, no
// flag): only benchmarks use them, to see where a cold start goes.
const (
	envCPUProfile  = "FR_CPUPROFILE"  // path: CPU profile from start to exit
	envHeapProfile = "FR_HEAPPROFILE" // path: heap profile (in use and allocated) at exit
	// envPeakProfile: path of a heap profile taken when the live heap
	// (after a GC) was largest. Peak RSS follows the peak live heap (the
	// GC lets the heap grow to twice it), which during a cold start is
	// not the heap at exit.
	envPeakProfile = "FR_HEAPPROFILE_PEAK"
	envTrace       = "FR_TRACE" // path: execution trace (runtime/trace) from start to exit
)

// peakProfileRate is the heap profile's sampling rate (bytes) while the
// peak profile is asked for.
const peakProfileRate = 16 << 10

// startProfiles starts what getenv asks for and returns the function that
// writes the profiles; it is called once, at exit, while the daemon's state
// is still reachable (so the heap profile's in-use figures show it).
// Profiles are opened before the privilege drop, so an unprivileged daemon
// can write them.
func startProfiles(getenv func(string) string) (stop func() error, err error) {
	var cpu, heap, tr *os.File
	stopPeak := func() error { return nil }
	stop = func() error {
		errs := []error{stopPeak()}
		stopPeak = func() error { return nil }
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
			cpu = nil
		}
		if tr != nil {
			trace.Stop()
			errs = append(errs, tr.Close())
			tr = nil
		}
		if heap != nil {
			runtime.GC() // in-use figures as of now
			errs = append(errs, pprof.Lookup("heap").WriteTo(heap, 0), heap.Close())
			heap = nil
		}
		return errors.Join(errs...)
	}
	if cpu, err = startTo(getenv, envCPUProfile, pprof.StartCPUProfile); err != nil {
		return stop, err
	}
	if tr, err = startTo(getenv, envTrace, trace.Start); err != nil {
		return stop, err
	}
	// Written at stop: nothing to start.
	if heap, err = startTo(getenv, envHeapProfile, func(io.Writer) error { return nil }); err != nil {
		return stop, err
	}
	if p := getenv(envPeakProfile); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return stop, fmt.Errorf("%s: %w", envPeakProfile, err)
		}
		// The default rate (one sample per 512 KiB) names only the
		// largest holders of a 20 MB heap; a finer one shows the rest.
		runtime.MemProfileRate = peakProfileRate
		stopPeak = watchPeak(f)
	}
	return stop, nil
}

// startTo creates the file the environment variable env names and starts
// writing to it; nil when env is unset.
func startTo(getenv func(string) string, env string, start func(io.Writer) error) (*os.File, error) {
	p := getenv(env)
	if p == "" {
		return nil, nil
	}
	f, err := os.Create(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	if err := start(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	return f, nil
}

// watchPeak rewrites f with a heap profile whenever the live heap reached
// by a GC exceeds the largest seen by a MiB; the returned function stops
// the watch and closes f. Polling (every 20 ms) may miss a short peak
// between two polls; the profile then shows the largest one it saw.
func watchPeak(f *os.File) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var best uint64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			metrics.Read(sample)
			if live := sample[0].Value.Uint64(); live > best+1<<20 {
				best = live
				if _, err := f.Seek(0, 0); err != nil {
					werr = err
					return
				}
				if err := f.Truncate(0); err != nil {
					werr = err
					return
				}
				if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
					werr = err
					return
				}
			}
		}
	}()
	return func() error {
		cancel()
		wg.Wait()
		return errors.Join(werr, f.Close())
	}
}
