package docker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// fakeAPI is a Docker daemon in memory whose event stream the test drives.
type fakeAPI struct {
	mu      sync.Mutex
	nets    map[string]network.Inspect // by ID
	down    bool
	streams chan *stream // every new subscription
}

type stream struct {
	opts events.ListOptions
	msgs chan events.Message
	errs chan error
}

type notFound struct{}

func (notFound) Error() string { return "no such network" }
func (notFound) NotFound()     {}

func newFakeAPI(nets ...network.Inspect) *fakeAPI {
	f := &fakeAPI{nets: map[string]network.Inspect{}, streams: make(chan *stream, 16)}
	for _, n := range nets {
		f.nets[n.ID] = n
	}
	return f
}

var errDown = errors.New("Cannot connect to the Docker daemon")

func (f *fakeAPI) Events(ctx context.Context, o events.ListOptions) (<-chan events.Message, <-chan error) {
	s := &stream{opts: o, msgs: make(chan events.Message), errs: make(chan error, 1)}
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		s.errs <- errDown
	} else {
		f.streams <- s
	}
	return s.msgs, s.errs
}

func (f *fakeAPI) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	var out []network.Summary
	for _, n := range f.nets {
		out = append(out, n)
	}
	return out, nil
}

func (f *fakeAPI) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return network.Inspect{}, errDown
	}
	n, ok := f.nets[id]
	if !ok {
		return network.Inspect{}, notFound{}
	}
	return n, nil
}

func (f *fakeAPI) ServerVersion(context.Context) (types.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return types.Version{}, errDown
	}
	return types.Version{Version: "20.10.24", APIVersion: "1.41"}, nil
}

func (f *fakeAPI) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeAPI) put(n network.Inspect) {
	f.mu.Lock()
	f.nets[n.ID] = n
	f.mu.Unlock()
}

func (f *fakeAPI) remove(id string) {
	f.mu.Lock()
	delete(f.nets, id)
	f.mu.Unlock()
}

func (f *fakeAPI) nextStream(t *testing.T) *stream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not subscribe to events")
		return nil
	}
}

func netEvent(action events.Action, id, name string) events.Message {
	return events.Message{Type: events.NetworkEventType, Action: action,
		Actor: events.Actor{ID: id, Attributes: map[string]string{"name": name, "type": "bridge"}}}
}

func bridgeNet(name, id, cidr string, created time.Time) network.Inspect {
	return network.Inspect{Name: name, ID: id, Scope: "local", Driver: "bridge", Created: created,
		IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: cidr}}}}
}

func id(c byte) string { return fmt.Sprintf("%c%063d", c, 0) }

// recorder collects hook calls.
type recorder struct {
	mu                                sync.Mutex
	pokes, skips, invalids, connected []string
	disconnected                      []error
}

func (r *recorder) rulesChanged(trigger string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pokes = append(r.pokes, trigger)
}

func (r *recorder) get(p *[]string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*p)
}

func (r *recorder) options() Options {
	add := func(p *[]string) func(string, string) {
		return func(name, reason string) { r.mu.Lock(); *p = append(*p, name+": "+reason); r.mu.Unlock() }
	}
	return Options{
		OnRulesChanged: r.rulesChanged,
		Backoff:        func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) },
		OnSkip:         add(&r.skips),
		OnInvalid:      add(&r.invalids),
		OnConnected: func(v string) {
			r.mu.Lock()
			r.connected = append(r.connected, v)
			r.mu.Unlock()
		},
		OnDisconnected: func(err error) {
			r.mu.Lock()
			r.disconnected = append(r.disconnected, err)
			r.mu.Unlock()
		},
	}
}

// run starts the watcher; it is stopped and joined when the test ends.
func run(t *testing.T, api API, store *state.Store, o Options) {
	t.Helper()
	runTB(t, New(api, store, o))
}

func names(s *state.Store) []string {
	var out []string
	for _, n := range s.LocalNetworks() {
		out = append(out, n.Name+"="+n.ID[:1])
	}
	return out
}

func wantNames(t *testing.T, s *state.Store, want ...string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := names(s); !slices.Equal(got, want) {
			return fmt.Errorf("store has %v, want %v", got, want)
		}
		return nil
	})
}

func TestWatcherListEventsAndReconnect(t *testing.T) {
	t0 := time.Now()
	api := newFakeAPI(
		bridgeNet("app1", id('a'), "10.5.35.0/24", t0),
		network.Inspect{Name: "bridge", ID: id('d'), Driver: "bridge", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.17.0.0/16"}}}},
		bridgeNet("dup", id('x'), "10.5.40.0/24", t0.Add(time.Second)),
		bridgeNet("dup", id('y'), "10.5.41.0/24", t0.Add(2*time.Second)),
	)
	store := state.New()
	var mu sync.Mutex
	var triggers []string
	store.Subscribe(func(ev state.Event) {
		mu.Lock()
		triggers = append(triggers, ev.Trigger+" "+ev.Key)
		mu.Unlock()
	})
	rec := &recorder{}
	run(t, api, store, rec.options())

	s := api.nextStream(t)
	if s.opts.Since == "" || !s.opts.Filters.ExactMatch("type", "network") {
		t.Errorf("event subscription: since %q, filters %v", s.opts.Since, s.opts.Filters)
	}
	wantNames(t, store, "app1=a", "dup=x")
	if !store.Synced(Source) {
		t.Error("not synced after the list")
	}
	if got := rec.get(&rec.invalids); !slices.Equal(got, []string{"dup: network y00000000000 has the same name as x00000000000"}) {
		t.Errorf("invalids: %q", got)
	}
	if got := rec.get(&rec.skips); !slices.ContainsFunc(got, func(s string) bool { return s == "bridge: Docker's default bridge" }) {
		t.Errorf("skips: %q", got)
	}

	// Create: checked with an inspect.
	api.put(bridgeNet("app2", id('b'), "10.5.36.0/24", t0))
	s.msgs <- netEvent(events.ActionCreate, id('b'), "app2")
	wantNames(t, store, "app1=a", "app2=b", "dup=x")

	// A replayed create of a network gone since, and a destroy of an older
	// network that had the name app1: both change nothing.
	s.msgs <- netEvent(events.ActionCreate, id('z'), "gone")
	s.msgs <- netEvent(events.ActionDestroy, id('q'), "app1")
	// Hints only: connect and container start report Docker's rules changed.
	s.msgs <- netEvent(events.ActionConnect, id('a'), "app1")
	s.msgs <- events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Actor: events.Actor{ID: "c", Attributes: map[string]string{"name": "c1"}}}
	s.msgs <- events.Message{Type: events.ContainerEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "c", Attributes: map[string]string{"name": "c1"}}}
	// Destroy of the network itself.
	api.remove(id('b'))
	s.msgs <- netEvent(events.ActionDestroy, id('b'), "app2")
	wantNames(t, store, "app1=a", "dup=x")
	// The report follows the store write of the same event: wait for it.
	var pokes []string
	testutil.Eventually(t, 5*time.Second, func() error {
		pokes = rec.get(&rec.pokes)
		for _, want := range []string{"docker:list", "docker:create app2", "docker:connect app1", "docker:start c1", "docker:destroy app2"} {
			if !slices.Contains(pokes, want) {
				return fmt.Errorf("no rules-changed report %q in %q", want, pokes)
			}
		}
		return nil
	})
	if slices.Contains(pokes, "docker:create c1") {
		t.Errorf("container create reported as a rules change: %q", pokes)
	}

	// dockerd goes down: nothing is removed while it is away.
	api.setDown(true)
	s.errs <- errors.New("unexpected EOF")
	testutil.Eventually(t, 5*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.disconnected) < 3 { // the break, then failed reconnects
			return fmt.Errorf("disconnects: %v", rec.disconnected)
		}
		return nil
	})
	if got := names(store); !slices.Equal(got, []string{"app1=a", "dup=x"}) {
		t.Fatalf("store changed while Docker was down: %v", got)
	}

	// It comes back with app1 removed and app3 created meanwhile: re-listed.
	api.remove(id('a'))
	api.put(bridgeNet("app3", id('c'), "10.5.37.0/24", t0))
	api.setDown(false)
	api.nextStream(t)
	wantNames(t, store, "app3=c", "dup=x")
	// OnConnected follows the list: wait for it rather than race it.
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := rec.get(&rec.connected); len(got) != 2 || got[0] != "20.10.24 (API 1.41)" {
			return fmt.Errorf("connected: %q", got)
		}
		return nil
	})

	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"docker:list app1", "docker:create app2 app2", "docker:destroy app2 app2", "docker:list app3"} {
		if !slices.Contains(triggers, want) {
			t.Errorf("no store event %q in %q", want, triggers)
		}
	}
}

// A create event for a second network with a stored network's name does not
// take the name while the older one exists (the list applies the same rule,
// so a re-list never flips the record); once the older one is gone, it does.
func TestCreateOfNamesakeKeepsOlder(t *testing.T) {
	t0 := time.Now()
	api := newFakeAPI(bridgeNet("dup", id('x'), "10.5.40.0/24", t0))
	store := state.New()
	rec := &recorder{}
	run(t, api, store, rec.options())
	s := api.nextStream(t)
	wantNames(t, store, "dup=x")

	api.put(bridgeNet("dup", id('y'), "10.5.41.0/24", t0.Add(time.Second)))
	s.msgs <- netEvent(events.ActionCreate, id('y'), "dup")
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := rec.get(&rec.invalids); !slices.Contains(got, "dup: network y00000000000 has the same name as x00000000000") {
			return fmt.Errorf("invalids: %q", got)
		}
		return nil
	})
	if got := names(store); !slices.Equal(got, []string{"dup=x"}) {
		t.Fatalf("the newer namesake took the name: %v", got)
	}

	// The older one vanished without a destroy event reaching us: the newer takes over.
	api.remove(id('x'))
	s.msgs <- netEvent(events.ActionCreate, id('y'), "dup")
	wantNames(t, store, "dup=y")
}

// An ineligible network created with a stored network's name (an internal
// one, say) leaves the stored one alone while it exists: the create is
// checked against Docker, not taken as "the name moved".
func TestIneligibleNamesakeKeepsEligible(t *testing.T) {
	t0 := time.Now()
	api := newFakeAPI(bridgeNet("dup", id('x'), "10.5.40.0/24", t0))
	store := state.New()
	rec := &recorder{}
	run(t, api, store, rec.options())
	s := api.nextStream(t)
	wantNames(t, store, "dup=x")

	inner := bridgeNet("dup", id('y'), "10.5.41.0/24", t0.Add(time.Second))
	inner.Internal = true
	api.put(inner)
	s.msgs <- netEvent(events.ActionCreate, id('y'), "dup")
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := rec.get(&rec.skips); !slices.Contains(got, "dup: internal network (no traffic leaves the host)") {
			return fmt.Errorf("skips: %q", got)
		}
		return nil
	})
	if got := names(store); !slices.Equal(got, []string{"dup=x"}) {
		t.Fatalf("an ineligible namesake removed the eligible network: %v", got)
	}
	// Its destroy changes nothing either.
	api.remove(id('y'))
	s.msgs <- netEvent(events.ActionDestroy, id('y'), "dup")
	s.msgs <- netEvent(events.ActionConnect, id('x'), "dup") // a marker: handled after the destroy
	testutil.Eventually(t, 5*time.Second, func() error {
		if !slices.Contains(rec.get(&rec.pokes), "docker:connect dup") {
			return fmt.Errorf("marker not handled")
		}
		return nil
	})
	if got := names(store); !slices.Equal(got, []string{"dup=x"}) {
		t.Fatalf("after the namesake's destroy: %v", got)
	}
}

// When the network holding a name is destroyed, an eligible namesake
// (refused while the older one existed) takes the name at once.
func TestDestroyOfNameHolderHandsOver(t *testing.T) {
	t0 := time.Now()
	api := newFakeAPI(
		bridgeNet("dup", id('x'), "10.5.40.0/24", t0),
		bridgeNet("dup", id('y'), "10.5.41.0/24", t0.Add(time.Second)),
		bridgeNet("dupe", id('z'), "10.5.42.0/24", t0), // the name filter matches substrings
	)
	store := state.New()
	rec := &recorder{}
	run(t, api, store, rec.options())
	s := api.nextStream(t)
	wantNames(t, store, "dup=x", "dupe=z")

	api.remove(id('x'))
	s.msgs <- netEvent(events.ActionDestroy, id('x'), "dup")
	wantNames(t, store, "dup=y", "dupe=z")
	api.remove(id('y'))
	s.msgs <- netEvent(events.ActionDestroy, id('y'), "dup")
	wantNames(t, store, "dupe=z")
}

// Relist re-lists within the session: networks created or removed without
// an event reaching us (a missed event) are right after it.
func TestRelistHealsMissedEvents(t *testing.T) {
	t0 := time.Now()
	api := newFakeAPI(bridgeNet("app1", id('a'), "10.5.35.0/24", t0))
	store := state.New()
	var mu sync.Mutex
	var triggers []string
	store.Subscribe(func(ev state.Event) {
		mu.Lock()
		triggers = append(triggers, ev.Trigger+" "+ev.Key)
		mu.Unlock()
	})
	rec := &recorder{}
	w := New(api, store, rec.options())
	runTB(t, w)
	api.nextStream(t)
	wantNames(t, store, "app1=a")

	api.remove(id('a'))
	api.put(bridgeNet("app2", id('b'), "10.5.36.0/24", t0))
	w.Relist()
	wantNames(t, store, "app2=b")
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"docker:relist app1", "docker:relist app2"} {
		if !slices.Contains(triggers, want) {
			t.Errorf("no store event %q in %q", want, triggers)
		}
	}
	select {
	case s := <-api.streams:
		t.Errorf("Relist reconnected (new subscription %+v) instead of listing in the session", s.opts)
	default:
	}
}
