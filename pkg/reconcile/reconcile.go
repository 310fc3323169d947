// Package reconcile runs controllers: a typed, rate-limited work queue per
// controller (deduplicated keys, one worker per key at a time, per-key
// exponential backoff), a periodic resync that enqueues every wanted and every
// owned key, and one log line per reconcile that changed something.
//
// Controllers never log and never retry; they report the changes they make
// with Record and return an error when the key must be tried again.
package reconcile

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Controller converges one kind of state, one key at a time.
type Controller interface {
	// Name is the controller's name in logs and metrics, e.g. "routes".
	Name() string
	// Reconcile reads the desired state of key from the snapshot and the actual
	// state from the kernel or etcd, and converges. It must be idempotent.
	Reconcile(ctx context.Context, key string) error
	// Keys returns every wanted and every owned key, for a resync.
	Keys(ctx context.Context) ([]string, error)
}

type recorderKey struct{}

// Recorder collects the changes of one reconcile. Safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	changes []string
}

// Changes returns what was recorded so far.
func (r *Recorder) Changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.changes...)
}

// WithRecorder returns a context that collects the changes Record reports.
func WithRecorder(ctx context.Context) (context.Context, *Recorder) {
	r := &Recorder{}
	return context.WithValue(ctx, recorderKey{}, r), r
}

// Record reports one change a controller made, in words an operator reads,
// e.g. "route add 10.5.35.0/24 via 10.5.35.0 dev flannel.1". Without a
// recorder in ctx it does nothing.
func Record(ctx context.Context, change string) {
	if r, ok := ctx.Value(recorderKey{}).(*Recorder); ok {
		r.mu.Lock()
		r.changes = append(r.changes, change)
		r.mu.Unlock()
	}
}

// RequeueError asks the runner to reconcile the key again after a delay,
// without counting a failure: the controller waits for something to settle
// (e.g. a grace period before sweeping).
type RequeueError struct {
	After  time.Duration
	Reason string
}

func (e *RequeueError) Error() string { return fmt.Sprintf("requeue after %s: %s", e.After, e.Reason) }

// RequeueAfter returns a RequeueError.
func RequeueAfter(d time.Duration, reason string) error {
	return &RequeueError{After: d, Reason: reason}
}
