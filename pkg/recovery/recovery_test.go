package recovery

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type step struct {
	at     time.Duration // since t0
	fault  string
	action Action
	isNew  bool
}

func run(t *testing.T, o Options, steps []step) {
	t.Helper()
	g := New(o)
	for i, s := range steps {
		d := g.Observe(t0.Add(s.at), s.fault)
		if d.Action != s.action || d.New != s.isNew {
			t.Fatalf("step %d (t+%s, %q): got %s new=%v, want %s new=%v", i, s.at, s.fault, d.Action, d.New, s.action, s.isNew)
		}
	}
}

const dev = "VXLAN device flannel.1 missing"

func TestGraceThenOneRestart(t *testing.T) {
	run(t, Options{Grace: 10 * time.Second, Cooldown: 900 * time.Second, DailyCap: 2}, []step{
		{0, "", ActionNone, false},
		{1 * time.Second, dev, ActionWait, false},
		{10 * time.Second, dev, ActionWait, false}, // 9s < grace
		{11 * time.Second, dev, ActionRestart, true},
		{12 * time.Second, dev, ActionWait, false}, // a new grace after the restart
		{14 * time.Second, "", ActionNone, false},  // flanneld recreated it
	})
}

// A second fault inside the cooldown is not restarted, and that is
// reported once, not on every evaluation.
func TestCooldown(t *testing.T) {
	run(t, Options{Grace: 5 * time.Second, Cooldown: 900 * time.Second, DailyCap: 2}, []step{
		{0, dev, ActionWait, false},
		{5 * time.Second, dev, ActionRestart, true},
		{8 * time.Second, "", ActionNone, false},
		{60 * time.Second, dev, ActionWait, false},
		{65 * time.Second, dev, ActionSkippedCooldown, true},
		{66 * time.Second, dev, ActionSkippedCooldown, false},
		{905 * time.Second, dev, ActionRestart, true}, // cooldown over
	})
}

func TestDailyCap(t *testing.T) {
	o := Options{Grace: time.Second, Cooldown: time.Minute, DailyCap: 2}
	run(t, o, []step{
		{0, dev, ActionWait, false},
		{1 * time.Second, dev, ActionRestart, true},
		{2 * time.Minute, dev, ActionRestart, true},
		{4 * time.Minute, dev, ActionSkippedCap, true},
		{5 * time.Minute, dev, ActionSkippedCap, false},
		{24*time.Hour + 2*time.Second, dev, ActionRestart, true}, // the first restart left the window
	})
	run(t, Options{Grace: time.Second, Cooldown: time.Minute, DailyCap: 0}, []step{
		{0, dev, ActionWait, false},
		{time.Second, dev, ActionSkippedCap, true},
	})
}

// Another fault while one lasts keeps the fault's start (the host has been
// broken that long) but is a new decision to report.
func TestFaultChanges(t *testing.T) {
	lease := "flannel lease of this host missing"
	run(t, Options{Grace: 5 * time.Second, Cooldown: time.Hour, DailyCap: 2}, []step{
		{0, lease, ActionWait, false},
		{6 * time.Second, dev, ActionRestart, true},
	})
}

func TestStatus(t *testing.T) {
	g := New(Options{Grace: time.Second, Cooldown: time.Minute, DailyCap: 2})
	g.Observe(t0, dev)
	g.Observe(t0.Add(time.Second), dev)
	s := g.Status(t0.Add(2 * time.Second))
	if s.Restarts24h != 1 || !s.LastRestart.Equal(t0.Add(time.Second)) || s.Fault != dev {
		t.Fatalf("status = %+v", s)
	}
	if s := g.Status(t0.Add(25 * time.Hour)); s.Restarts24h != 0 {
		t.Fatalf("status a day later = %+v, want no recent restarts", s)
	}
}
