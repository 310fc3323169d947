// Package docker watches this host's Docker networks: it lists them, then
// follows Docker's network events, and writes the eligible ones into the
// state store (the "docker" source). When the event stream breaks or dockerd
// is down it reconnects with backoff and lists again; an outage never
// removes anything from the store.
//
// Relist asks for a list within the running session; the wiring calls it on
// every periodic resync, so that a missed event heals within INTERVAL.
//
// Names are the store's keys. When Docker holds two networks of one name
// (possible with old API clients), the oldest eligible one has the name, on
// a list and on every event: a create or a destroy of a network of that name
// settles the name from Docker's networks of that name now.
//
// It also reports, through a hook, the events after which Docker rewrites
// its iptables rules (network create/destroy/connect/disconnect, container
// start); which controller reacts is the wiring's business.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Source is the store's name for this source (store.SetSynced).
const Source = "docker"

// sinceMargin is how far back the event stream starts. dockerd flushes the
// stream's headers before it subscribes, so an event in between would be
// lost; asking for recent past events closes that gap. Replayed events are
// harmless: every event is re-checked against Docker or the store.
const sinceMargin = 2 * time.Second

// API is the part of the Docker client the watcher uses.
type API interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	ServerVersion(ctx context.Context) (types.Version, error)
}

// NewClient returns a Docker client configured like the docker CLI from the
// environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
// DOCKER_API_VERSION) that negotiates the API version with the daemon
// (Debian's dockerd 20.10 speaks 1.41).
func NewClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// Options configure a Watcher. Every field is optional.
type Options struct {
	// OnRulesChanged reports an event after which Docker may have rewritten
	// its iptables rules (trigger names it, e.g. "docker:start c1"), and each
	// completed list.
	OnRulesChanged func(trigger string)
	// Backoff makes the reconnect policy; nil: exponential from 250ms to 5s,
	// forever.
	Backoff func() backoff.BackOff
	// OnSkip reports a network that is not eligible by design (log at debug).
	OnSkip func(name, reason string)
	// OnInvalid reports a network that looks eligible but whose data is
	// unusable (log at warning).
	OnInvalid func(name, reason string)
	// OnConnected reports a successful (re)connection and list, with the
	// daemon's version, e.g. "20.10.24+dfsg1 (API 1.41)".
	OnConnected func(version string)
	// OnDisconnected reports why the connection was lost or not made.
	OnDisconnected func(err error)
}

// Watcher keeps the store's local networks equal to Docker's eligible ones.
// It is the store's only writer of local networks.
type Watcher struct {
	api    API
	store  *state.Store
	o      Options
	relist chan struct{} // Relist's request, one pending at most
}

// New returns a watcher of api writing into store.
func New(api API, store *state.Store, o Options) *Watcher {
	if o.Backoff == nil {
		o.Backoff = defaultBackoff
	}
	return &Watcher{api: api, store: store, o: o, relist: make(chan struct{}, 1)}
}

// Relist asks Run to list Docker again, replacing the store's local networks
// with what Docker has now (trigger "docker:relist"). It never blocks; the
// list runs in Run's goroutine between two events. While Docker is
// unreachable it does nothing more than the reconnect's own list.
func (w *Watcher) Relist() {
	select {
	case w.relist <- struct{}{}:
	default: // one is pending already
	}
}

func defaultBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	return b
}

// Run lists and follows Docker until ctx ends; it reconnects on every
// failure and returns nil when ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	b := backoff.WithContext(w.o.Backoff(), ctx)
	for {
		listed, err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listed {
			b.Reset()
		}
		w.disconnected(err)
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("docker: giving up: %w", err)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// session subscribes to events, lists, then applies events until the stream
// breaks. listed says whether the list succeeded.
func (w *Watcher) session(ctx context.Context) (listed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the event stream's goroutine
	// Subscribe first: events that happen during the list wait in the stream
	// (the client's goroutine, the socket and dockerd's per-subscriber buffer).
	msgs, errs := w.api.Events(ctx, events.ListOptions{Since: since(time.Now()), Filters: eventFilter()})
	v, err := w.api.ServerVersion(ctx)
	if err != nil {
		return false, fmt.Errorf("docker version: %w", err)
	}
	select {
	case <-w.relist: // this list serves it
	default:
	}
	if err := w.list(ctx, "docker:list"); err != nil {
		return false, err
	}
	w.connected(v)
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err, ok := <-errs:
			if !ok || err == nil {
				err = io.EOF
			}
			return true, fmt.Errorf("docker event stream: %w", err)
		case m := <-msgs:
			if err := w.handle(ctx, m); err != nil {
				return true, err
			}
		case <-w.relist:
			if err := w.list(ctx, "docker:relist"); err != nil {
				return true, err
			}
		}
	}
}

func since(now time.Time) string {
	t := now.Add(-sinceMargin)
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

func eventFilter() filters.Args {
	return filters.NewArgs(
		filters.Arg("type", string(events.NetworkEventType)),
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", string(events.ActionCreate)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("event", string(events.ActionConnect)),
		filters.Arg("event", string(events.ActionDisconnect)),
		filters.Arg("event", string(events.ActionStart)),
	)
}

// list replaces the store's local networks with Docker's eligible ones.
func (w *Watcher) list(ctx context.Context, trigger string) error {
	nets, err := w.api.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return fmt.Errorf("docker network list: %w", err)
	}
	w.store.ReplaceLocal(w.eligible(nets), trigger)
	w.store.SetSynced(Source, trigger)
	w.rulesChanged(trigger)
	return nil
}

// eligible filters a list, reporting each network left out. Names are the
// store's keys; if Docker shows two networks with one name, the older wins.
func (w *Watcher) eligible(nets []network.Summary) []state.LocalNetwork {
	slices.SortStableFunc(nets, func(a, b network.Summary) int { return a.Created.Compare(b.Created) })
	var out []state.LocalNetwork
	seen := map[string]string{}
	for _, n := range nets {
		ln, reason, v := classify(n)
		switch {
		case v == skip:
			w.skip(n.Name, reason)
		case v == invalid:
			w.invalid(n.Name, reason)
		case seen[n.Name] != "":
			w.invalid(n.Name, fmt.Sprintf("network %.12s has the same name as %.12s", n.ID, seen[n.Name]))
		default:
			seen[n.Name] = n.ID
			out = append(out, ln)
		}
	}
	return out
}

// handle applies one event. Events are hints: a create settles its name
// from Docker's networks of that name now, a destroy does so only when it
// names the network stored under that name (by ID), so replayed or stale
// events change nothing. An error ends the session (re-list).
func (w *Watcher) handle(ctx context.Context, m events.Message) error {
	name := m.Actor.Attributes["name"]
	trigger := fmt.Sprintf("docker:%s %s", m.Action, name)
	switch {
	case m.Type == events.NetworkEventType && m.Action == events.ActionCreate:
		if err := w.created(ctx, m.Actor.ID, name, trigger); err != nil {
			return err
		}
	case m.Type == events.NetworkEventType && m.Action == events.ActionDestroy:
		if cur, ok := w.store.Local(name); ok && (cur.ID == m.Actor.ID || m.Actor.ID == "") {
			// A namesake refused while this one held the name may take it now.
			if err := w.settle(ctx, name, trigger); err != nil {
				return err
			}
		}
	case m.Type == events.NetworkEventType:
		// connect, disconnect: only Docker's rules change.
	case m.Type == events.ContainerEventType && m.Action == events.ActionStart:
	default:
		return nil // container create/destroy/… match the filter but are not hints
	}
	w.rulesChanged(trigger)
	return nil
}

// created handles a create event: the name (from the event, else from an
// inspect of the network) is settled from Docker's networks of that name.
func (w *Watcher) created(ctx context.Context, id, name, trigger string) error {
	if name == "" {
		n, err := w.api.NetworkInspect(ctx, id, network.InspectOptions{})
		if cerrdefs.IsNotFound(err) {
			return nil // already gone again; its destroy event follows
		}
		if err != nil {
			return fmt.Errorf("docker network inspect %.12s: %w", id, err)
		}
		name = n.Name
	}
	return w.settle(ctx, name, trigger)
}

// settle sets the store's entry of name from the networks Docker has of that
// name now, with the list's rule: the oldest eligible one, else none. Every
// namesake left out is reported (skip or invalid). An ineligible network
// therefore never removes an eligible namesake that still exists, and the
// destroy of the one holding the name hands it to the next.
func (w *Watcher) settle(ctx context.Context, name, trigger string) error {
	// Docker's name filter matches substrings: keep exact matches.
	nets, err := w.api.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return fmt.Errorf("docker network list (name %s): %w", name, err)
	}
	same := slices.DeleteFunc(nets, func(n network.Summary) bool { return n.Name != name })
	if ok := w.eligible(same); len(ok) > 0 {
		w.store.PutLocal(ok[0], trigger)
	} else {
		w.store.DeleteLocal(name, trigger)
	}
	return nil
}

func (w *Watcher) rulesChanged(trigger string) {
	if w.o.OnRulesChanged != nil {
		w.o.OnRulesChanged(trigger)
	}
}

func (w *Watcher) skip(name, reason string) {
	if w.o.OnSkip != nil {
		w.o.OnSkip(name, reason)
	}
}

func (w *Watcher) invalid(name, reason string) {
	if w.o.OnInvalid != nil {
		w.o.OnInvalid(name, reason)
	}
}

func (w *Watcher) connected(v types.Version) {
	if w.o.OnConnected != nil {
		w.o.OnConnected(fmt.Sprintf("%s (API %s)", v.Version, v.APIVersion))
	}
}

func (w *Watcher) disconnected(err error) {
	if w.o.OnDisconnected != nil && !errors.Is(err, context.Canceled) {
		w.o.OnDisconnected(err)
	}
}
