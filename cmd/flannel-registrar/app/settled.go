package app

// Settled says whether the first pass is done: Docker and etcd were listed,
// the start resync queued every controller's keys, and no key waits in any
// queue now. A cold start's burst of work (and of memory) is over then.
func (a *App) Settled() bool {
	select {
	case <-a.synced:
	default:
		return false
	}
	if a.mgr.LastResync().IsZero() {
		return false
	}
	for name := range a.mgr.Stats() {
		if r := a.mgr.Runner(name); r != nil && r.Len() > 0 {
			return false
		}
	}
	return true
}
