package etcd

import (
	"strings"
	"testing"
	"time"
)

func TestStreamLiveness(t *testing.T) {
	t0 := time.Now()
	s := newStreamLiveness(time.Second)
	s.last = t0
	if why := s.silent(t0.Add(time.Minute)); why != "" {
		t.Errorf("a stream that never answered a progress request judged silent: %q", why)
	}
	s.heard(t0.Add(time.Second), false)
	if why := s.silent(t0.Add(time.Minute)); why != "" {
		t.Errorf("events alone (no progress notification yet) judged silent: %q", why)
	}
	s.heard(t0.Add(2*time.Second), true)
	s.answeredElsewhere(t0.Add(3500 * time.Millisecond))
	if why := s.silent(t0.Add(4 * time.Second)); why != "" {
		t.Errorf("silent after 2 s (limit 3 s): %q", why)
	}
	s.answeredElsewhere(t0.Add(2500 * time.Millisecond))
	if why := s.silent(t0.Add(5*time.Second + 500*time.Millisecond)); why != "" {
		t.Errorf("judged silent though etcd answered nothing else since the silence began (etcd down): %q", why)
	}
	s.answeredElsewhere(t0.Add(5 * time.Second))
	why := s.silent(t0.Add(5*time.Second + 500*time.Millisecond))
	if !strings.Contains(why, "silent for 3.5s") {
		t.Errorf("3.5 s of silence: %q, want a reason naming it", why)
	}
	s.heard(t0.Add(6*time.Second), false)
	if why := s.silent(t0.Add(7 * time.Second)); why != "" {
		t.Errorf("an event resets the silence: %q", why)
	}
	if got := newStreamLiveness(2 * time.Second).silentAfter; got != 6*time.Second {
		t.Errorf("silentAfter at a 2 s interval: %s, want 6s", got)
	}
}

func TestStreamLivenessNeedsCheck(t *testing.T) {
	t0 := time.Now()
	s := newStreamLiveness(time.Second)
	s.last = t0
	if !s.needsCheck(t0.Add(100 * time.Millisecond)) {
		t.Error("no header read before the stream answered a progress request (older etcd, or the watch's start)")
	}
	s.heard(t0, false)
	if !s.needsCheck(t0.Add(100 * time.Millisecond)) {
		t.Error("events alone let the header read stop: an etcd without progress answers needs it")
	}
	s.heard(t0, true)
	if s.needsCheck(t0.Add(1400 * time.Millisecond)) {
		t.Error("header read 1.4 s after a progress answer (limit 1.5 s): steady state must send none")
	}
	if !s.needsCheck(t0.Add(1600 * time.Millisecond)) {
		t.Error("no header read after 1.6 s of silence: a frozen member or a lost history would go unseen")
	}
	s.heard(t0.Add(1500*time.Millisecond), false)
	if s.needsCheck(t0.Add(2 * time.Second)) {
		t.Error("an event 0.5 s ago is no silence")
	}
}
