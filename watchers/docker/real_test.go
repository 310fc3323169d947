package docker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/dockertest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// realSetup starts dockerd in a namespace and a watcher on it, with the
// client made from DOCKER_HOST as the daemon does it.
func realSetup(t testing.TB) (*dockertest.Daemon, *state.Store, *recorder) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "dockerd")
	ns := testutil.NewNetns(t, "frdk")
	d := dockertest.Start(t, ns)
	t.Setenv("DOCKER_HOST", d.Host())
	c, err := NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	store := state.New()
	rec := &recorder{}
	o := rec.options()
	o.Backoff = nil // the real policy
	runTB(t, New(c, store, o))
	testutil.Eventually(t, 20*time.Second, func() error {
		if !store.Synced(Source) {
			return fmt.Errorf("docker source not synced")
		}
		return nil
	})
	return d, store, rec
}

// runTB runs w until the test ends (joined in cleanup).
func runTB(t testing.TB, w *Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func hasNet(store *state.Store, name string) error {
	if _, ok := store.Local(name); !ok {
		return fmt.Errorf("%s not in the store (has %v)", name, names(store))
	}
	return nil
}

func lacksNet(store *state.Store, name string) error {
	if _, ok := store.Local(name); ok {
		return fmt.Errorf("%s still in the store", name)
	}
	return nil
}

func TestRealDockerd(t *testing.T) {
	d, store, rec := realSetup(t)

	// Create: the store gets the network as Docker describes it.
	d.Docker(t, "network", "create", "--subnet", "198.18.10.0/24", "app1")
	created := time.Now()
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "app1") })
	t.Logf("docker network create → store: %s (poll granularity 10ms)", time.Since(created).Round(time.Millisecond))
	id := d.Docker(t, "network", "inspect", "-f", "{{.Id}}", "app1")
	want := state.LocalNetwork{ID: id, Name: "app1", Subnet: netip.MustParsePrefix("198.18.10.0/24"), Bridge: "br-" + id[:12]}
	if got, _ := store.Local("app1"); !reflect.DeepEqual(got, want) {
		t.Errorf("store has %+v, want %+v", got, want)
	}
	if out := d.NS.Run(t, "ip", "-o", "link", "show", want.Bridge); out == "" {
		t.Errorf("bridge %s not in the namespace", want.Bridge)
	}

	d.Docker(t, "network", "create", "--subnet", "198.18.11.0/24", "--gateway", "198.18.11.254",
		"-o", "com.docker.network.bridge.name=app2br", "app2")
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "app2") })
	if got, _ := store.Local("app2"); got.Gateway != netip.MustParseAddr("198.18.11.254") || got.Bridge != "app2br" {
		t.Errorf("app2: %+v", got)
	}

	// Opted out and internal networks never appear: once a network created
	// after them is in the store, their events have been handled.
	d.Docker(t, "network", "create", "--label", LabelEnable+"=false", "--subnet", "198.18.12.0/24", "optout")
	d.Docker(t, "network", "create", "--internal", "--subnet", "198.18.13.0/24", "inner")
	// Isolation groups: a good label lands in the store, a bad one is
	// refused through OnInvalid (one report) and the network stays out.
	d.Docker(t, "network", "create", "--label", registry.GroupLabel+"=web,db", "--subnet", "198.18.17.0/24", "grouped")
	d.Docker(t, "network", "create", "--label", registry.GroupLabel+"=we b", "--subnet", "198.18.18.0/24", "badgroup")
	d.Docker(t, "network", "create", "--subnet", "198.18.14.0/24", "marker")
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "marker") })
	if g, _ := store.Local("grouped"); !slices.Equal(g.Groups, []string{"db", "web"}) {
		t.Errorf("grouped network in the store: %+v", g)
	}
	var refused int
	for _, r := range rec.get(&rec.invalids) {
		if strings.HasPrefix(r, "badgroup: ") && strings.Contains(r, registry.GroupLabel) {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("bad group label reported %d times, want once: %q", refused, rec.get(&rec.invalids))
	}
	for _, name := range []string{"optout", "inner", "badgroup"} {
		if err := lacksNet(store, name); err != nil {
			t.Error(err)
		}
	}
	d.Docker(t, "network", "rm", "grouped", "badgroup")
	testutil.Eventually(t, 10*time.Second, func() error { return lacksNet(store, "grouped") })
	skips := rec.get(&rec.skips)
	for _, want := range []string{"optout: label " + LabelEnable + "=false", "inner: internal network (no traffic leaves the host)", "bridge: Docker's default bridge"} {
		if !slices.Contains(skips, want) {
			t.Errorf("no skip %q in %q", want, skips)
		}
	}

	// Remove.
	d.Docker(t, "network", "rm", "app1")
	testutil.Eventually(t, 10*time.Second, func() error { return lacksNet(store, "app1") })

	// A container start is reported (Docker rewrote its rules).
	d.ImportBusybox(t)
	d.Docker(t, "run", "-d", "--stop-timeout", "1", "--name", "c1", "--network", "app2", dockertest.Image, "sleep", "600")
	testutil.Eventually(t, 10*time.Second, func() error {
		if pokes := rec.get(&rec.pokes); !slices.Contains(pokes, "docker:start c1") {
			return fmt.Errorf("pokes: %q", pokes)
		}
		return nil
	})

	// dockerd restarts under the watcher: the store never loses a network.
	stop := make(chan struct{})
	var polls, bad atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			polls.Add(1)
			if got := names(store); len(got) != 2 {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprint(got))
			}
		}
	}()
	connectedBefore := len(rec.get(&rec.connected))
	d.Restart()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(rec.get(&rec.connected)); n <= connectedBefore {
			return fmt.Errorf("not reconnected (connected %d times)", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if bad.Load() > 0 {
		t.Errorf("store lost networks during the restart in %d of %d polls, first: %v", bad.Load(), polls.Load(), firstBad.Load())
	}
	rec.mu.Lock()
	disconnects := slices.Clone(rec.disconnected)
	rec.mu.Unlock()
	if len(disconnects) == 0 {
		t.Error("the restart was not reported as a disconnect")
	}
	t.Logf("restart: %d polls, store intact; disconnect reported as %v", polls.Load(), disconnects[0])

	// The new event stream works.
	d.Docker(t, "network", "create", "--subnet", "198.18.15.0/24", "after")
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "after") })
	d.Docker(t, "network", "rm", "after")
	testutil.Eventually(t, 10*time.Second, func() error { return lacksNet(store, "after") })
}

// TestRealDockerdNamesakes: two networks with one name on a real dockerd
// (created through the API without the duplicate check, as old clients
// could). An internal namesake created after an eligible network leaves the
// eligible one registered; destroying the older of two eligible namesakes
// hands the name to the newer at once.
func TestRealDockerdNamesakes(t *testing.T) {
	d, store, rec := realSetup(t)
	d.Docker(t, "network", "create", "--subnet", "198.18.20.0/24", "dup")
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "dup") })
	older := d.Docker(t, "network", "inspect", "-f", "{{.Id}}", "dup")

	if _, err := d.CreateDuplicateNetwork(t, "dup", "198.18.21.0/24", map[string]any{"Internal": true}); err != nil {
		if errors.Is(err, dockertest.ErrDuplicatesRefused) {
			t.Skipf("this dockerd cannot hold two networks with one name: %v", err)
		}
		t.Fatal(err)
	}
	d.Docker(t, "network", "create", "--subnet", "198.18.22.0/24", "marker")
	testutil.Eventually(t, 10*time.Second, func() error { return hasNet(store, "marker") })
	if cur, ok := store.Local("dup"); !ok || cur.ID != older {
		t.Fatalf("after an internal namesake's create the store has %+v (present %v), want %.12s", cur, ok, older)
	}
	if got := rec.get(&rec.skips); !slices.Contains(got, "dup: internal network (no traffic leaves the host)") {
		t.Errorf("the internal namesake was not reported: %q", got)
	}

	newer, err := d.CreateDuplicateNetwork(t, "dup", "198.18.23.0/24", nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		want := fmt.Sprintf("dup: network %.12s has the same name as %.12s", newer, older)
		if got := rec.get(&rec.invalids); !slices.Contains(got, want) {
			return fmt.Errorf("invalids %q, want %q", got, want)
		}
		return nil
	})
	if cur, _ := store.Local("dup"); cur.ID != older {
		t.Fatalf("the newer namesake took the name from the older: %+v", cur)
	}
	d.Docker(t, "network", "rm", older)
	testutil.Eventually(t, 10*time.Second, func() error {
		if cur, ok := store.Local("dup"); !ok || cur.ID != newer || cur.Subnet != netip.MustParsePrefix("198.18.23.0/24") {
			return fmt.Errorf("store has %+v (present %v), want the newer namesake %.12s", cur, ok, newer)
		}
		return nil
	})
}
