package health

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "health")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := Check(path, now, MaxAge); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("no file: %v", err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, tc := range []struct {
		name string
		s    Status
		want string // "" = healthy
	}{
		{"fresh and ready", Status{PID: 7, Time: now.Add(-MaxAge), Ready: true}, ""},
		{"stale", Status{PID: 7, Time: now.Add(-MaxAge - time.Second), Ready: true}, "16s old (pid 7)"},
		{"not ready", Status{PID: 7, Time: now, Detail: "waiting for etcd"}, "not ready (pid 7): waiting for etcd"},
	} {
		if err := f.Write(tc.s); err != nil {
			t.Fatal(err)
		}
		_, err := Check(path, now, MaxAge)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	// A shorter value over a longer one: the tail left by a racing reader's
	// view does not matter, and after the truncate it is gone.
	long := Status{PID: 7, Time: now, Ready: false, Detail: strings.Repeat("x", 200)}
	if err := f.Write(long); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(Status{PID: 7, Time: now, Ready: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(path, now, MaxAge); err != nil {
		t.Errorf("after shorter rewrite: %v", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(path, now, MaxAge); err == nil {
		t.Error("garbage file: healthy")
	}
}

// The heartbeat turns ready when ready() does, and says stopped once the
// daemon stops.
func TestHeartbeat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "health")
	var ready atomic.Bool
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		f.Heartbeat(ctx, 10*time.Millisecond, "v1", func() (bool, string) {
			if ready.Load() {
				return true, ""
			}
			return false, "waiting for docker"
		}, func(err error) { t.Errorf("heartbeat: %v", err) })
	})
	defer func() { cancel(); wg.Wait() }()
	testutil.Eventually(t, 5*time.Second, func() error {
		_, err := Check(path, time.Now(), time.Second)
		if err == nil || !strings.Contains(err.Error(), "waiting for docker") {
			return errors.New("want not ready: waiting for docker, got " + errString(err))
		}
		return nil
	})
	ready.Store(true)
	testutil.Eventually(t, 5*time.Second, func() error {
		s, err := Check(path, time.Now(), time.Second)
		if err == nil && (s.PID != os.Getpid() || s.Version != "v1") {
			t.Errorf("status %+v", s)
		}
		return err
	})
	cancel()
	wg.Wait()
	if _, err := Check(path, time.Now(), time.Second); err == nil || !strings.Contains(err.Error(), "not ready") || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("after stop: %v, want not ready: stopped", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "healthy"
	}
	return err.Error()
}
