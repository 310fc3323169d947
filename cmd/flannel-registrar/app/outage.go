package app

// This file: reporting a dependency's outage once.

import (
	"log/slog"
	"sync"
)

// outage logs the first failure of a dependency at warning level and the
// repeats at debug, so a long outage does not flood the log.
type outage struct {
	log *slog.Logger
	msg string

	mu    sync.Mutex // guards down, count
	down  bool
	count int
}

func (o *outage) report(err error) {
	o.mu.Lock()
	first := !o.down
	o.down = true
	o.count++
	o.mu.Unlock()
	if first {
		o.log.Warn(o.msg, "error", err.Error())
	} else {
		o.log.Debug(o.msg, "error", err.Error())
	}
}

func (o *outage) isDown() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.down
}

func (o *outage) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		o.log.Info("dependency back", "failed_attempts", o.count)
	}
	o.down, o.count = false, 0
}
