package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestTraceWrittenAtStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.out")
	cpu := filepath.Join(t.TempDir(), "cpu.pprof")
	stop, err := startProfiles(func(k string) string {
		switch k {
		case envTrace:
			return path
		case envCPUProfile: // both at once, as -profile with FR_TRACE
			return cpu
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// An execution trace starts with its header, "go 1.NN trace".
	if !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("%s starts %q: not an execution trace", path, b[:min(len(b), 16)])
	}
	if fi, err := os.Stat(cpu); err != nil || fi.Size() == 0 {
		t.Errorf("CPU profile beside the trace: %v, %v", fi, err)
	}
	if err := stop(); err != nil { // the exit path may call it again
		t.Errorf("second stop: %v", err)
	}
}

func TestTraceBadPath(t *testing.T) {
	stop, err := startProfiles(func(k string) string {
		if k == envTrace {
			return filepath.Join(t.TempDir(), "missing", "trace.out")
		}
		return ""
	})
	if err == nil {
		t.Error("a trace path in a missing directory: want an error")
	}
	if err := stop(); err != nil {
		t.Errorf("stop after a failed start: %v", err)
	}
}
