package reconcile

import (
	"sync"
	"time"
)

// Hold defers deletions for a while after the desired state may have lost
// entries that are still wanted: after etcd lost its data and was re-listed,
// the snapshot is empty until every owner has re-registered (within a few
// seconds), and deleting what vanished would withdraw working routes
// everywhere meanwhile. Controllers that delete ask Remaining before they
// do and look again when it has passed; after that, the snapshot wins.
// The zero value (and nil) holds nothing. Safe for concurrent use.
type Hold struct {
	mu    sync.Mutex // guards until
	until time.Time
	now   func() time.Time // tests
}

// Start holds deletions for d from now, or longer if a hold already lasts longer.
func (h *Hold) Start(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.clock().Add(d); u.After(h.until) {
		h.until = u
	}
}

// End releases the hold now. Controllers that deferred a deletion look
// again when they asked to (the Remaining they saw), or at the next event.
func (h *Hold) End() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.until = time.Time{}
}

// Remaining returns how long deletions are still held (0: not held).
func (h *Hold) Remaining() time.Duration {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return max(h.until.Sub(h.clock()), 0)
}

func (h *Hold) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}
