package reconcile

import (
	"sync"
	"time"
)

// Settle confirms an absence before a controller acts on it: an object is
// deleted only once it has been unwanted for a grace period. A kernel
// notification can arrive before the etcd watch delivers the lease that
// wants the object (flanneld writes both within a millisecond, and seconds
// apart while etcd re-lists): deleting at once would remove flanneld's fresh
// entry. Safe for concurrent use.
type Settle struct {
	Grace time.Duration
	now   func() time.Time

	mu    sync.Mutex // guards first
	first map[string]time.Time
}

// DefaultGrace is the grace period of NewSettle(0): long enough for a
// lease written with its kernel state to arrive through the watch, short
// enough that a stale entry is gone before anyone looks.
const DefaultGrace = 2 * time.Second

// NewSettle returns a Settle with the given grace period: 0 means
// DefaultGrace, a negative one none.
func NewSettle(grace time.Duration) *Settle {
	if grace == 0 {
		grace = DefaultGrace
	}
	return &Settle{Grace: grace, now: time.Now, first: map[string]time.Time{}}
}

// Ready says whether key has been unwanted for the grace period; if not,
// it returns how much longer to wait (the first call starts the clock).
func (s *Settle) Ready(key string) (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	t, ok := s.first[key]
	if !ok {
		s.first[key] = now
		return s.Grace <= 0, s.Grace
	}
	if left := s.Grace - now.Sub(t); left > 0 {
		return false, left
	}
	return true, 0
}

// Clear forgets key: it is wanted again, or gone.
func (s *Settle) Clear(key string) {
	s.mu.Lock()
	delete(s.first, key)
	s.mu.Unlock()
}
