package reconcile

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StartLogLimit is how many changed reconciles of a controller's start-up
// pass are logged one line each; the rest are counted in the pass's summary
// line. A host with a few networks logs exactly as before; one with 10,000
// remote subnets logs 20 lines and a summary per controller instead of
// 10,000 (formatting and writing them cost more CPU than deciding them).
const StartLogLimit = 20

// Converger is implemented by controllers that keep something only for their
// start-up pass (e.g. the kernel state a cold start dumped once): the runner
// calls Converged once, when the pass is over.
type Converger interface {
	Converged()
}

type startKey struct{}

// WithStart marks ctx as the start-up resync's: Keys is called before any
// worker runs, so nothing reconciles concurrently with it. A controller may
// then keep what it read there (a dump of the kernel's table) as the actual
// state of keys not yet reconciled, until Converged.
func WithStart(ctx context.Context) context.Context {
	return context.WithValue(ctx, startKey{}, true)
}

// IsStart says whether ctx is the start-up resync's (WithStart).
func IsStart(ctx context.Context) bool {
	v, _ := ctx.Value(startKey{}).(bool)
	return v
}

// startPass counts a runner's start-up pass: from Run until its queue is
// first empty with no reconcile in flight (the first convergence). Keys
// re-queued with a delay (RequeueAfter, retries) do not hold it open.
type startPass struct {
	mu         sync.Mutex // guards everything below
	active     bool
	began      time.Time
	inflight   int
	reconciles int
	changed    int
	logged     int
	errors     int
	verbs      map[string]int // changes by verb ("route add": 10000)
}

func (p *startPass) begin() {
	p.mu.Lock()
	p.active, p.began, p.verbs = true, time.Now(), map[string]int{}
	p.inflight, p.reconciles, p.changed, p.logged, p.errors = 0, 0, 0, 0, 0
	p.mu.Unlock()
}

// started counts a reconcile taken off the queue; it says whether the pass
// is still on.
func (p *startPass) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active {
		p.inflight++
	}
	return p.active
}

// note counts a finished reconcile of the pass and says whether its change
// line is to be logged.
func (p *startPass) note(changes []string, failed bool) (log bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reconciles++
	if failed {
		p.errors++
	}
	if len(changes) == 0 {
		return false
	}
	p.changed++
	for _, c := range changes {
		p.verbs[verb(c)]++
	}
	if p.logged < StartLogLimit {
		p.logged++
		return true
	}
	return false
}

// done ends a reconcile of the pass; with queued keys left it returns
// false. When the pass ends it returns true and its summary.
func (p *startPass) done(queued int) (bool, []any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.active {
		return false, nil
	}
	p.inflight--
	if p.inflight > 0 || queued > 0 {
		return false, nil
	}
	p.active = false
	verbs := slices.Sorted(maps.Keys(p.verbs))
	counts := make([]string, 0, len(verbs))
	for _, v := range verbs {
		counts = append(counts, v+": "+strconv.Itoa(p.verbs[v]))
	}
	attrs := []any{"reconciles", p.reconciles, "changed", p.changed, "changes", counts,
		"errors", p.errors, "duration", time.Since(p.began).Round(time.Millisecond)}
	if n := p.changed - p.logged; n > 0 {
		attrs = append(attrs, "not_logged", n)
	}
	p.verbs = nil
	return true, attrs
}

// endIfIdle ends the pass when nothing was queued for it at all.
func (p *startPass) endIfIdle(queued int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.active || p.inflight > 0 || queued > 0 {
		return false
	}
	p.active = false
	return true
}

// verb is what a change does: its first two words ("route add", "fdb
// set", "register network"), skipping an iptables table option
// ("iptables -t nat -A ..." is "iptables -A").
func verb(change string) string {
	w := strings.Fields(change)
	if len(w) >= 4 && w[1] == "-t" {
		w = append(w[:1], w[3:]...)
	}
	if len(w) > 2 {
		w = w[:2]
	}
	return strings.Join(w, " ")
}
