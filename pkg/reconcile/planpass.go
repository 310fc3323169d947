package reconcile

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Planner is a Controller whose Reconcile is a plan (deciding, reading the
// actual state) followed by its writes. Its start-up pass plans the queued
// keys a batch at a time, on every worker, then applies the whole batch's
// writes in one Apply: the controller can hand them to the kernel together
// (netlinkx.Handle.RouteWriteAll: one system call for hundreds of routes).
//
// Why: in a cold start of 10,000 routes each write, made on its own
// between two keys' decisions, waited on the kernel's lock and on the
// threads its notifications woke: 100 µs a route where `ip -batch` takes
// 35. Planned in batches and written 256 to a system call, the 10,000
// routes of the benchmark's records run take 0.3 s instead of 1.1.
type Planner interface {
	Controller
	// Plan decides key as Reconcile does and returns its writes: Reconcile
	// is Plan, then Apply of that one plan. A nil Plan has nothing to
	// write. An error (RequeueError included) is the reconcile's result
	// and nothing is applied.
	Plan(ctx context.Context, key string) (Plan, error)
	// Apply makes the writes of plans in order, each key's with its
	// reconcile's context (ctxs[i]: Record), and returns each key's
	// result (RequeueError to look again later).
	Apply(ctxs []context.Context, plans []Plan) []error
}

// Plan is the writes one reconcile of a Planner decided on, in the
// controller's own terms.
type Plan any

// PlanBatch is how many keys a Planner's start-up pass plans before it
// applies them: enough that the writes run back to back, few enough that
// the plans held at once stay small (a 10,000-key pass in one batch would
// hold every destination's decision at the daemon's peak).
const PlanBatch = 256

// planned is one key of a plan batch.
type planned struct {
	key, trigger string
	inPass       bool
	ctx          context.Context
	rec          *Recorder
	plan         Plan
	err          error
	took         time.Duration
}

// planPass runs the start-up pass of p before its workers start: until the
// queue is first empty, batches of keys are planned on r.workers goroutines
// and then applied in order here, each key's result handled as a reconcile's.
func (r *Runner) planPass(ctx context.Context, p Planner) {
	for ctx.Err() == nil {
		n := min(r.queue.Len(), PlanBatch)
		if n == 0 {
			return
		}
		batch := make([]planned, 0, n)
		for range n {
			// Only this goroutine takes keys yet, and n were ready: Get
			// does not block.
			key, quit := r.queue.Get()
			if quit {
				return
			}
			b := planned{key: key}
			b.inPass, b.trigger = r.take(key)
			b.ctx, b.rec = WithRecorder(ctx)
			batch = append(batch, b)
		}
		r.plan(p, batch)
		r.apply(p, batch)
		for i := range batch {
			b := &batch[i]
			err := r.report(ctx, b.key, b.trigger, b.inPass, b.rec, b.took, b.err)
			r.finish(ctx, b.key, err, b.inPass)
		}
	}
}

// apply applies the plans of batch in one call and sets each key's result.
func (r *Runner) apply(p Planner, batch []planned) {
	var ctxs []context.Context
	var plans []Plan
	var idx []int
	for i := range batch {
		if b := &batch[i]; b.err == nil && b.plan != nil {
			ctxs, plans, idx = append(ctxs, b.ctx), append(plans, b.plan), append(idx, i)
		}
	}
	if len(plans) == 0 {
		return
	}
	start := time.Now()
	errs := p.Apply(ctxs, plans)
	// The batch's writes took this long together: each key is charged its
	// share.
	each := time.Since(start) / time.Duration(len(plans))
	for n, i := range idx {
		b := &batch[i]
		b.err, b.took, b.plan = errs[n], b.took+each, nil
	}
}

// plan plans every key of batch, on r.workers goroutines.
func (r *Runner) plan(p Planner, batch []planned) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.workers, len(batch)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(batch) {
					return
				}
				b := &batch[i]
				start := time.Now()
				b.plan, b.err = p.Plan(b.ctx, b.key)
				b.took = time.Since(start)
			}
		})
	}
	wg.Wait()
}
