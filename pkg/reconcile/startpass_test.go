package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// changeCtrl records one change per reconcile and counts Converged calls;
// it remembers whether its Keys saw the start-up mark.
type changeCtrl struct {
	mu         sync.Mutex
	done       map[string]bool
	sawStart   []bool
	converged  atomic.Int32
	keys       []string
	failFirstB bool
}

func (c *changeCtrl) Name() string { return "change" }
func (c *changeCtrl) Keys(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	c.sawStart = append(c.sawStart, IsStart(ctx))
	c.mu.Unlock()
	return c.keys, nil
}
func (c *changeCtrl) Converged() { c.converged.Add(1) }
func (c *changeCtrl) Reconcile(ctx context.Context, key string) error {
	Record(ctx, "route add "+key+" via 10.0.0.1")
	c.mu.Lock()
	defer c.mu.Unlock()
	if key == "b" && c.failFirstB {
		c.failFirstB = false
		return errors.New("boom")
	}
	c.done[key] = true
	return nil
}

func (c *changeCtrl) reconciled(keys ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if !c.done[k] {
			return fmt.Errorf("%s not reconciled", k)
		}
	}
	return nil
}

func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestStartPassCapsLogsAndSummarises: of a start-up pass with more changed
// keys than StartLogLimit, the first StartLogLimit are logged one line each,
// the pass ends in one summary line with the counts, Converged is called
// once, failures are logged in full, and changes after the pass are logged
// one line each again.
func TestStartPassCapsLogsAndSummarises(t *testing.T) {
	var buf syncBuf
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	n := StartLogLimit + 30
	c := &changeCtrl{done: map[string]bool{}, failFirstB: true}
	for i := range n - 1 {
		c.keys = append(c.keys, fmt.Sprintf("k%03d", i))
	}
	c.keys = append(c.keys, "b")
	m := NewManager(0, log)
	m.Add(c, Options{Workers: 2, BaseBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := poll.Until(ctx, 10*time.Second, 5*time.Millisecond, func() error {
		if c.converged.Load() == 0 {
			return errors.New("start-up pass not over")
		}
		return c.reconciled(c.keys...)
	}); err != nil {
		t.Fatal(err)
	}
	m.Enqueue("change", "late", "test:late")
	if err := poll.Until(ctx, 10*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(buf.String(), `"key":"late"`) {
			return errors.New("no line for the key changed after the pass")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done

	c.mu.Lock()
	if len(c.sawStart) != 1 || !c.sawStart[0] {
		t.Errorf("Keys saw the start mark %v, want [true] (one start resync)", c.sawStart)
	}
	c.mu.Unlock()
	if got := c.converged.Load(); got != 1 {
		t.Errorf("Converged called %d times, want 1", got)
	}
	select {
	case <-m.Runner("change").StartPassDone():
	default:
		t.Error("StartPassDone not closed after the pass")
	}
	var reconciled, failed, summaries int
	var summary map[string]any
	lateAfterSummary := false
	for _, l := range logLines(t, buf.String()) {
		switch l["msg"] {
		case "reconciled":
			reconciled++
			if l["key"] == "late" {
				lateAfterSummary = summaries == 1
			}
		case "reconcile failed":
			failed++
		case "start-up pass done":
			summaries++
			summary = l
		}
	}
	// b fails once in the pass and succeeds on its retry, which may land in
	// the pass or after it: StartLogLimit lines, maybe b's, and late's.
	if reconciled < StartLogLimit+1 || reconciled > StartLogLimit+2 {
		t.Errorf("%d reconciled lines, want %d or %d:\n%s", reconciled, StartLogLimit+1, StartLogLimit+2, buf.String())
	}
	if failed != 1 || summaries != 1 || !lateAfterSummary {
		t.Fatalf("failed lines %d (want 1), summaries %d (want 1), late logged after the summary %v:\n%s", failed, summaries, lateAfterSummary, buf.String())
	}
	if summary["errors"] != float64(1) || summary["reconciles"].(float64) < float64(n) || summary["changed"].(float64) < float64(n) {
		t.Errorf("summary %v: want errors 1, at least %d reconciles and changed", summary, n)
	}
	counts, _ := summary["changes"].([]any)
	if len(counts) != 1 || !strings.HasPrefix(counts[0].(string), "route add: ") {
		t.Errorf("summary changes %v, want one verb, route add", summary["changes"])
	}
	if summary["not_logged"].(float64) < float64(n-StartLogLimit-1) {
		t.Errorf("summary not_logged %v, want at least %d", summary["not_logged"], n-StartLogLimit-1)
	}
}

// TestStartPassEmptyQueue: a runner started with nothing queued ends its
// pass at once (Converged) and logs changes one line each from the start.
func TestStartPassEmptyQueue(t *testing.T) {
	var buf syncBuf
	c := &changeCtrl{done: map[string]bool{}}
	r := NewRunner(c, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := poll.Until(ctx, 10*time.Second, time.Millisecond, func() error {
		if c.converged.Load() != 1 {
			return errors.New("not converged")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r.Enqueue("x", "test")
	if err := poll.Until(ctx, 10*time.Second, time.Millisecond, func() error {
		if !strings.Contains(buf.String(), `"msg":"reconciled"`) {
			return errors.New("no reconciled line")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "start-up pass done") {
		t.Errorf("summary of an empty pass logged:\n%s", buf.String())
	}
}

func TestVerb(t *testing.T) {
	for in, want := range map[string]string{
		"route add 10.5.35.0/24 via 10.5.35.0 dev flannel.1":     "route add",
		"register network app1 10.0.0.0/24":                      "register network",
		"observe flannel.1":                                      "observe flannel.1",
		"iptables -t filter -A FLANNEL-REGISTRAR -i x -j ACCEPT": "iptables -A",
		"observe": "observe",
	} {
		if got := verb(in); got != want {
			t.Errorf("verb(%q) = %q, want %q", in, got, want)
		}
	}
}

// namedCtrl is a changeCtrl under another name.
type namedCtrl struct {
	*changeCtrl
	name string
}

func (n namedCtrl) Name() string { return n.name }

// TestManagerStartAfter: a runner with Options.After neither lists nor
// reconciles before it is closed, while the others start at once.
func TestManagerStartAfter(t *testing.T) {
	m := NewManager(0, slog.New(slog.NewJSONHandler(&syncBuf{}, nil)))
	free := namedCtrl{&changeCtrl{done: map[string]bool{}, keys: []string{"f"}}, "free"}
	gated := namedCtrl{&changeCtrl{done: map[string]bool{}, keys: []string{"g"}}, "gated"}
	gate := make(chan struct{})
	m.Add(gated, Options{After: gate})
	m.Add(free, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := poll.Until(ctx, 10*time.Second, time.Millisecond, func() error { return free.reconciled("f") }); err != nil {
		t.Fatal(err)
	}
	gated.mu.Lock()
	listed, ran := len(gated.sawStart), len(gated.done)
	gated.mu.Unlock()
	if listed != 0 || ran != 0 || !m.LastResync().IsZero() {
		t.Fatalf("gated controller listed %d times and reconciled %d keys before its gate opened (last resync %v)", listed, ran, m.LastResync())
	}
	close(gate)
	if err := poll.Until(ctx, 10*time.Second, time.Millisecond, func() error {
		if m.LastResync().IsZero() {
			return errors.New("start resync not complete")
		}
		return gated.reconciled("g")
	}); err != nil {
		t.Fatal(err)
	}
}
