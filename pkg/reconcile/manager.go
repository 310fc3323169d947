package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Manager owns the runners of all controllers and the resync ticker.
type Manager struct {
	log      *slog.Logger
	interval time.Duration

	mu       sync.RWMutex // guards runners, order and onResync (written only before Run)
	runners  map[string]*Runner
	order    []string
	onResync []func(trigger string)

	lastResync atomic.Int64 // unix nanoseconds of the last complete periodic resync
}

// OnResync adds f, called at the start of every periodic resync (not the
// first one of Run) from Run's goroutine, before the controllers' keys are
// queued: e.g. to have a watcher list its source again so that a missed
// event heals within the interval. f must not block. Call before Run.
func (m *Manager) OnResync(f func(trigger string)) {
	m.mu.Lock()
	m.onResync = append(m.onResync, f)
	m.mu.Unlock()
}

// LastResync is when the last resync (at start or periodic) listed every
// key of every controller; zero before the first.
func (m *Manager) LastResync() time.Time {
	if n := m.lastResync.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// NewManager returns a manager that resyncs every interval (0: never).
func NewManager(interval time.Duration, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{log: log, interval: interval, runners: map[string]*Runner{}}
}

// Add registers a controller. Call before Run. Controllers are resynced and,
// in one-shot mode, run in the order they were added.
func (m *Manager) Add(ctrl Controller, o Options) *Runner {
	if o.Logger == nil {
		o.Logger = m.log
	}
	r := NewRunner(ctrl, o)
	m.mu.Lock()
	m.runners[ctrl.Name()] = r
	m.order = append(m.order, ctrl.Name())
	m.mu.Unlock()
	return r
}

// Runner returns the runner of controller name, or nil.
func (m *Manager) Runner(name string) *Runner {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.runners[name]
}

// Enqueue queues key for controller; unknown controllers are ignored.
func (m *Manager) Enqueue(controller, key, trigger string) {
	if r := m.Runner(controller); r != nil {
		r.Enqueue(key, trigger)
	}
}

// Resync enqueues every wanted and owned key of every controller.
func (m *Manager) Resync(ctx context.Context, trigger string) error {
	var errs []error
	for _, r := range m.list() {
		if err := r.Resync(ctx, trigger); err != nil {
			errs = append(errs, fmt.Errorf("resync %s: %w", r.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// ResyncOne enqueues every key of one controller.
func (m *Manager) ResyncOne(ctx context.Context, controller, trigger string) error {
	r := m.Runner(controller)
	if r == nil {
		return nil
	}
	return r.Resync(ctx, trigger)
}

// Stats returns every runner's counters by controller name.
func (m *Manager) Stats() map[string]Stats {
	out := map[string]Stats{}
	for _, r := range m.list() {
		out[r.Name()] = r.Stats()
	}
	return out
}

func (m *Manager) list() []*Runner {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Runner, 0, len(m.order))
	for _, n := range m.order {
		out = append(out, m.runners[n])
	}
	return out
}

// Run does a first full resync, starts every runner, then resyncs every
// interval until ctx is done. It returns when all workers have stopped.
//
// Each runner starts on its own, concurrently with the others (after its
// Options.After): its start resync queues its keys, then its workers run.
// The start resync of a controller thus queues its keys before any of its
// workers runs: the initial listing has usually queued most of them
// already, and a key still in the queue is queued once, so each is
// reconciled once at start (with workers running, a key reconciled before
// the resync reached it was reconciled a second time: 10,000 needless
// reconciles at 10,000 records). The start resync's context is marked
// WithStart. One controller's workers do not wait for another's listing
// (at 10,000 remote subnets each lists for a tenth of a second), but the
// listings run one at a time: each holds the whole desired state and a
// dump of the kernel's table for a moment, and together they would raise
// the peak memory.
func (m *Manager) Run(ctx context.Context) {
	var wg, starts sync.WaitGroup
	var incomplete atomic.Bool
	var listing sync.Mutex // one start resync at a time
	for _, r := range m.list() {
		starts.Add(1)
		wg.Go(func() {
			if r.after != nil {
				select {
				case <-r.after:
				case <-ctx.Done():
					starts.Done()
					return
				}
			}
			listing.Lock()
			err := r.Resync(WithStart(ctx), "start")
			listing.Unlock()
			if err != nil {
				incomplete.Store(true)
				if ctx.Err() == nil {
					// Keys that could be listed are queued; the rest come at the next resync.
					m.log.Warn("resync incomplete", "trigger", "start", "error", fmt.Errorf("resync %s: %w", r.Name(), err).Error())
				}
			}
			starts.Done()
			r.Run(ctx)
		})
	}
	wg.Go(func() {
		starts.Wait()
		if !incomplete.Load() && ctx.Err() == nil {
			m.lastResync.Store(time.Now().UnixNano())
		}
	})
	if m.interval > 0 {
		t := time.NewTicker(m.interval)
		defer t.Stop()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				m.mu.RLock()
				hooks := m.onResync
				m.mu.RUnlock()
				for _, f := range hooks {
					f("resync")
				}
				m.resync(ctx, "resync")
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
}

func (m *Manager) resync(ctx context.Context, trigger string) {
	err := m.Resync(ctx, trigger)
	if err != nil && ctx.Err() == nil {
		// Keys that could be listed are queued; the rest come at the next resync.
		m.log.Warn("resync incomplete", "trigger", trigger, "error", err.Error())
	}
	if err == nil {
		m.lastResync.Store(time.Now().UnixNano())
	}
}

// Once runs one full pass in the caller's goroutine: every key of every
// controller, in registration order, once each. Errors are joined.
func (m *Manager) Once(ctx context.Context) error {
	var errs []error
	for _, r := range m.list() {
		keys, err := r.ctrl.Keys(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list keys of %s: %w", r.Name(), err))
		}
		for _, k := range keys {
			var later *RequeueError
			if err := r.ReconcileNow(ctx, k, "once"); err != nil && !errors.As(err, &later) {
				errs = append(errs, fmt.Errorf("%s %s: %w", r.Name(), k, err))
			}
		}
	}
	return errors.Join(errs...)
}
