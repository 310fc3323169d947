// Package health is the daemon's heartbeat file and its check, what Docker's
// HEALTHCHECK and systemd watchers use until the daemon serves a health
// endpoint: the running daemon rewrites a small JSON file every Period
// (pid, time, whether Docker and etcd have been listed), and the check
// (`flannel-registrar health`) passes when the file is fresh and says ready.
//
// A file and not a socket: the check then needs no network and no
// privileges beyond reading it, and a daemon that hangs stops refreshing it.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DefaultFile is HEALTH_FILE's default.
const DefaultFile = "/run/flannel-registrar/health"

// Period is how often the daemon rewrites the file.
const Period = 5 * time.Second

// NotReadyPeriod is how often the daemon rewrites the file while not ready.
const NotReadyPeriod = time.Second

// MaxAge is how old the file may be before the check fails: three missed
// rewrites, so a slow disk or a GC pause never flips the state.
const MaxAge = 3 * Period

// Status is the file's content.
type Status struct {
	PID     int       `json:"pid"`
	Time    time.Time `json:"time"`
	Ready   bool      `json:"ready"`
	Detail  string    `json:"detail,omitempty"` // what it still waits for
	Version string    `json:"version,omitempty"`
}

// File is the daemon's open heartbeat file. It is opened before the daemon
// drops its privileges and written through that descriptor afterwards, so
// neither the directory nor the file needs to belong to the unprivileged uid.
type File struct {
	f *os.File
}

// Open creates (or reuses) the file at path, creating its directory.
func Open(path string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("health file directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open health file: %w", err)
	}
	return &File{f: f}, nil
}

// Write replaces the content with s. One pwrite at offset 0, then a
// truncate: a reader racing with it may see the new value followed by the
// tail of the old one, which Read ignores (it decodes the first value only).
func (f *File) Write(s Status) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode health status: %w", err)
	}
	b = append(b, '\n')
	if _, err := f.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write health file: %w", err)
	}
	if err := f.f.Truncate(int64(len(b))); err != nil {
		return fmt.Errorf("write health file: %w", err)
	}
	return nil
}

// Close closes the descriptor.
func (f *File) Close() error { return f.f.Close() }

// Read returns the file's status.
func Read(path string) (Status, error) {
	fh, err := os.Open(path)
	if err != nil {
		return Status{}, fmt.Errorf("read health file: %w", err)
	}
	defer fh.Close()
	var s Status
	if err := json.NewDecoder(fh).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("health file %s: %w", path, err)
	}
	return s, nil
}

// Check reads the file and says whether the daemon is healthy at now: the
// file is at most maxAge old and says ready. The error is one line.
func Check(path string, now time.Time, maxAge time.Duration) (Status, error) {
	s, err := Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("no health file %s: the daemon is not running (or HEALTH_FILE differs)", path)
	}
	if err != nil {
		return s, err
	}
	if age := now.Sub(s.Time); age > maxAge {
		return s, fmt.Errorf("health file %s is %s old (pid %d): the daemon stopped refreshing it", path, age.Round(time.Second), s.PID)
	}
	if !s.Ready {
		return s, fmt.Errorf("not ready (pid %d): %s", s.PID, s.Detail)
	}
	return s, nil
}

// Heartbeat rewrites the file every period until ctx ends, with ready()
// deciding Ready and Detail; at the end it writes a last status saying the
// daemon stopped, so the check fails at once instead of after MaxAge. Write
// errors go to onError (the caller logs), once per failure streak.
func (f *File) Heartbeat(ctx context.Context, period time.Duration, version string, ready func() (bool, string), onError func(error)) {
	t := time.NewTimer(0)
	defer t.Stop()
	var failing bool
	write := func(ok bool, detail string) {
		err := f.Write(Status{PID: os.Getpid(), Time: time.Now().UTC(), Ready: ok, Detail: detail, Version: version})
		if err != nil && !failing {
			onError(err)
		}
		failing = err != nil
	}
	for {
		select {
		case <-ctx.Done():
			write(false, "stopped")
			return
		case <-t.C:
		}
		ok, detail := ready()
		write(ok, detail)
		// Until ready, look every second: the change shows without
		// waiting a whole period.
		if ok {
			t.Reset(period)
		} else {
			t.Reset(min(period, NotReadyPeriod))
		}
	}
}
