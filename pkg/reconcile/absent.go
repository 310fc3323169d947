package reconcile

import "sync"

// Absent remembers what one dump of the kernel proved absent, so that the
// first reconcile of each such key after a cold start skips its point
// lookup: with 10,000 remote subnets and nothing installed yet, those
// 10,000 lookups (and as many for the FDB and the neighbours) cost more
// than the decisions. It is filled only from the start-up resync's dump
// (IsStart: no reconcile runs while it is taken), answers each key once
// (the reconcile that asked writes the object, so the answer is stale
// afterwards), forgets a key when a kernel notification says it changed
// (another program wrote it after the dump), and is dropped when the
// start-up pass is over (Converger) or notifications may have been lost.
// It only ever says "absent": a key it does not know is looked up as usual.
// The zero value knows nothing. Safe for concurrent use.
type Absent[K comparable] struct {
	mu   sync.Mutex // guards keys and changed
	keys map[K]struct{}
	// changed collects the keys forgotten between Begin and Set: a change
	// the dump may have missed.
	changed map[K]struct{}
}

// Begin is called before the dump is read: changes reported from now on
// are taken out of what Set is given.
func (a *Absent[K]) Begin() {
	a.mu.Lock()
	a.changed = map[K]struct{}{}
	a.mu.Unlock()
}

// Set replaces what is known absent with keys (which it keeps), less the
// keys reported changed since Begin.
func (a *Absent[K]) Set(keys map[K]struct{}) {
	a.mu.Lock()
	for k := range a.changed {
		delete(keys, k)
	}
	a.keys, a.changed = keys, nil
	a.mu.Unlock()
}

// Take says whether k was absent at the dump and nothing has said
// otherwise since; it answers true once per key.
func (a *Absent[K]) Take(k K) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.keys[k]; !ok {
		return false
	}
	delete(a.keys, k)
	return true
}

// Forget drops k: the kernel reported a change of it.
func (a *Absent[K]) Forget(k K) {
	a.mu.Lock()
	delete(a.keys, k)
	if a.changed != nil {
		a.changed[k] = struct{}{}
	}
	a.mu.Unlock()
}

// Drop forgets everything.
func (a *Absent[K]) Drop() {
	a.Set(nil)
}

// Len is the number of keys known absent.
func (a *Absent[K]) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}
