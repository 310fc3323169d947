package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// TriggerRetry is the trigger of a key re-queued after a failed reconcile.
const TriggerRetry = "retry"

// Stats are a runner's counters.
type Stats struct {
	Reconciles uint64 // reconciles run
	Changed    uint64 // reconciles that changed something
	Changes    uint64 // changes recorded
	Errors     uint64 // reconciles that failed
}

// Options tune a runner. Zero values take defaults.
type Options struct {
	Workers     int           // default 1
	BaseBackoff time.Duration // first retry delay, default 50ms
	MaxBackoff  time.Duration // retry delay cap, default 30s
	Logger      *slog.Logger  // default slog.Default()
	// After, when set, holds the runner's start (its start resync and its
	// workers, see Manager.Run) until it is closed: something that must
	// happen before this controller writes (the subnets controller waits
	// for the scan of the original tool's leftovers).
	After <-chan struct{}
}

// Runner feeds one controller from its queue.
type Runner struct {
	ctrl    Controller
	queue   workqueue.TypedRateLimitingInterface[string]
	workers int
	log     *slog.Logger
	after   <-chan struct{}

	mu       sync.Mutex        // guards triggers
	triggers map[string]string // first trigger of each queued key

	reconciles, changed, changes, errs atomic.Uint64

	// start counts the start-up pass, whose change lines are capped
	// (StartLogLimit) and summarised in one line when it ends.
	start startPass
	// passDone is closed when the start-up pass ends.
	passDone     chan struct{}
	passDoneOnce sync.Once
}

// NewRunner returns a runner for ctrl. Keys may be enqueued before Run.
func NewRunner(ctrl Controller, o Options) *Runner {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	rl := workqueue.NewTypedItemExponentialFailureRateLimiter[string](o.BaseBackoff, o.MaxBackoff)
	return &Runner{
		ctrl:     ctrl,
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[string]{Name: ctrl.Name()}),
		workers:  o.Workers,
		after:    o.After,
		log:      o.Logger.With("controller", ctrl.Name()),
		triggers: map[string]string{},
		passDone: make(chan struct{}),
	}
}

// Name is the controller's name.
func (r *Runner) Name() string { return r.ctrl.Name() }

// Enqueue asks for key to be reconciled; trigger says why (for the log line).
func (r *Runner) Enqueue(key, trigger string) {
	r.mu.Lock()
	if _, ok := r.triggers[key]; !ok {
		r.triggers[key] = trigger
	}
	r.mu.Unlock()
	r.queue.Add(key)
}

// Resync enqueues every key the controller wants or owns.
func (r *Runner) Resync(ctx context.Context, trigger string) error {
	keys, err := r.ctrl.Keys(ctx)
	for _, k := range keys {
		r.Enqueue(k, trigger)
	}
	return err
}

// Len is the number of keys waiting.
func (r *Runner) Len() int { return r.queue.Len() }

// Stats returns the runner's counters.
func (r *Runner) Stats() Stats {
	return Stats{Reconciles: r.reconciles.Load(), Changed: r.changed.Load(), Changes: r.changes.Load(), Errors: r.errs.Load()}
}

// Run processes keys until ctx is done, then shuts the queue down and waits
// for its workers. The keys reconciled until the queue is first empty make
// the start-up pass (see StartLogLimit).
func (r *Runner) Run(ctx context.Context) {
	r.start.begin()
	if r.start.endIfIdle(r.queue.Len()) {
		r.converged()
	}
	if p, ok := r.ctrl.(Planner); ok {
		r.planPass(ctx, p)
	}
	var wg sync.WaitGroup
	for range r.workers {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
}

func (r *Runner) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	inPass, trigger := r.take(key)
	err := r.reconcile(ctx, key, trigger, inPass)
	r.finish(ctx, key, err, inPass)
	return true
}

// take starts the work on key, taken off the queue: it says whether the
// start-up pass is on and returns the key's trigger.
func (r *Runner) take(key string) (inPass bool, trigger string) {
	inPass = r.start.started()
	r.mu.Lock()
	trigger = r.triggers[key]
	delete(r.triggers, key)
	r.mu.Unlock()
	return inPass, trigger
}

// finish ends the work on key with its reconcile's result: forgotten,
// re-queued after a delay, or retried with backoff.
func (r *Runner) finish(ctx context.Context, key string, err error, inPass bool) {
	var later *RequeueError
	switch {
	case err == nil:
		r.queue.Forget(key)
	case errors.As(err, &later):
		r.queue.Forget(key)
		r.mu.Lock()
		if _, ok := r.triggers[key]; !ok {
			r.triggers[key] = "requeue: " + later.Reason
		}
		r.mu.Unlock()
		r.queue.AddAfter(key, later.After)
	case ctx.Err() != nil:
		// Shutting down: the key is not lost, the next start resyncs it.
	default:
		r.mu.Lock()
		if _, ok := r.triggers[key]; !ok {
			r.triggers[key] = TriggerRetry
		}
		r.mu.Unlock()
		r.queue.AddRateLimited(key)
	}
	r.queue.Done(key) // re-queues key if it was added while we worked on it
	if inPass {
		if ended, summary := r.start.done(r.queue.Len()); ended {
			r.log.Info("start-up pass done", summary...)
			r.converged()
		}
	}
}

// converged tells the controller its start-up pass is over.
func (r *Runner) converged() {
	if c, ok := r.ctrl.(Converger); ok {
		c.Converged()
	}
	r.passDoneOnce.Do(func() { close(r.passDone) })
}

// StartPassDone is closed when the start-up pass of Run is over: the
// controller first converged.
func (r *Runner) StartPassDone() <-chan struct{} { return r.passDone }

// ReconcileNow runs one reconcile of key in the caller's goroutine and logs
// it. Used by one-shot mode and to observe the device before the runners
// start.
func (r *Runner) ReconcileNow(ctx context.Context, key, trigger string) error {
	return r.reconcile(ctx, key, trigger, false)
}

// reconcile runs and logs one reconcile; inPass: it belongs to the start-up
// pass, whose change lines are capped.
func (r *Runner) reconcile(ctx context.Context, key, trigger string, inPass bool) error {
	rctx, rec := WithRecorder(ctx)
	start := time.Now()
	err := r.ctrl.Reconcile(rctx, key)
	return r.report(ctx, key, trigger, inPass, rec, time.Since(start), err)
}

// report counts and logs one reconcile of key that took dur and recorded
// its changes in rec; it returns err.
func (r *Runner) report(ctx context.Context, key, trigger string, inPass bool, rec *Recorder, dur time.Duration, err error) error {
	changes := rec.Changes()

	r.reconciles.Add(1)
	if len(changes) > 0 {
		r.changed.Add(1)
		r.changes.Add(uint64(len(changes)))
	}
	var later *RequeueError
	requeued := errors.As(err, &later)
	failed := err != nil && !requeued
	if failed {
		r.errs.Add(1)
	}
	logChanges := !inPass || r.start.note(changes, failed)
	level := slog.LevelDebug
	msg := "in sync"
	switch {
	case requeued:
		msg = "requeued"
	case failed:
		level, msg = slog.LevelWarn, "reconcile failed"
	case len(changes) > 0:
		msg = "reconciled"
		if logChanges {
			level = slog.LevelInfo
		} // else counted in the start-up pass's summary line
	}
	// Attributes are built only for a line that is written: at 10,000 keys
	// building them costs more than many reconciles.
	if !r.log.Enabled(ctx, level) {
		return err
	}
	attrs := []any{"key", key, "trigger", trigger, "duration", dur.Round(time.Microsecond)}
	if len(changes) > 0 {
		attrs = append(attrs, "changes", changes)
	}
	switch {
	case requeued:
		attrs = append(attrs, "after", later.After, "reason", later.Reason)
	case failed:
		attrs = append(attrs, "error", err.Error(), "attempt", r.queue.NumRequeues(key)+1)
	}
	r.log.Log(ctx, level, msg, attrs...)
	return err
}
