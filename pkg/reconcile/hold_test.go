package reconcile

import (
	"testing"
	"time"
)

func TestHold(t *testing.T) {
	var nilHold *Hold
	if r := nilHold.Remaining(); r != 0 {
		t.Errorf("nil hold: Remaining %s, want 0", r)
	}
	now := time.Unix(1000, 0)
	h := &Hold{now: func() time.Time { return now }}
	if r := h.Remaining(); r != 0 {
		t.Errorf("zero hold: Remaining %s, want 0", r)
	}
	h.Start(5 * time.Second)
	now = now.Add(2 * time.Second)
	if r := h.Remaining(); r != 3*time.Second {
		t.Errorf("after 2s of 5s: Remaining %s, want 3s", r)
	}
	// A shorter hold does not cut a longer one short; a longer one extends it.
	h.Start(time.Second)
	if r := h.Remaining(); r != 3*time.Second {
		t.Errorf("after a shorter Start: Remaining %s, want 3s", r)
	}
	h.Start(4 * time.Second)
	if r := h.Remaining(); r != 4*time.Second {
		t.Errorf("after a longer Start: Remaining %s, want 4s", r)
	}
	h.End()
	if r := h.Remaining(); r != 0 {
		t.Errorf("after End: Remaining %s, want 0", r)
	}
	h.Start(4 * time.Second)
	now = now.Add(10 * time.Second)
	if r := h.Remaining(); r != 0 {
		t.Errorf("after the hold: Remaining %s, want 0", r)
	}
}
