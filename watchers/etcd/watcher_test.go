package etcd_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

var keys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

const (
	vxlanLease = `{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:a7:e4:a5:a1:dd"}}`
	reserved   = `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"flannel-registrar","BackendData":{"Host":"h2","Network":"web"}}`
	record     = `{"Host":"h2","Network":"web","NetworkID":"x","Subnet":"198.19.2.0/24","Gateway":"198.19.2.1","PublicIP":"198.51.100.2","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
	hostRec    = `{"Host":"h2","PublicIP":"198.51.100.2","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
)

func sub(s string) string { return keys.Subnet(netip.MustParsePrefix(s)) }

// recorder collects the store's events and the watcher's reports.
type recorder struct {
	mu       sync.Mutex
	triggers []string
	invalid  []string
	relists  []string
	losses   []string          // OnHistoryLost, as "reason|applied>revision leases=<in the store then>"
	errs     map[string]string // invalid key -> error of its last report
}

func (r *recorder) add(list *[]string, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*list = append(*list, s)
}

func (r *recorder) count(list *[]string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(*list)
}

func (r *recorder) snapshot(list *[]string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*list)
}

func (r *recorder) has(list *[]string, s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(*list, s)
}

type harness struct {
	srv   *etcdtest.Server
	cli   *clientv3.Client
	store *state.Store
	w     *etcdwatch.Watcher
	rec   *recorder
}

func newHarness(t *testing.T, opts ...func(*etcdwatch.Options)) *harness {
	t.Helper()
	srv := etcdtest.Start(t)
	h := &harness{srv: srv, cli: srv.Client(t), store: state.New(), rec: &recorder{errs: map[string]string{}}}
	h.store.Subscribe(func(ev state.Event) { h.rec.add(&h.rec.triggers, ev.Trigger) })
	o := etcdwatch.Options{
		Client: srv.Client(t), Keys: keys, Store: h.store,
		OnInvalid: func(key string, rev int64, err error) {
			h.rec.add(&h.rec.invalid, fmt.Sprintf("%s@%d", key, rev))
			h.rec.mu.Lock()
			h.rec.errs[key] = err.Error()
			h.rec.mu.Unlock()
		},
		OnRelist: func(reason string) { h.rec.add(&h.rec.relists, reason) },
		OnHistoryLost: func(l etcdwatch.HistoryLoss) {
			// The store still holds what etcd lost: the hook runs before the re-list.
			h.rec.add(&h.rec.losses, fmt.Sprintf("%s|%d>%d leases=%d", l.Reason, l.Applied, l.Revision, len(h.store.Leases())))
		},
	}
	for _, f := range opts {
		f(&o)
	}
	w, err := etcdwatch.New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	return h
}

// run runs the watcher until the returned stop is called (or the test ends)
// and joins it.
func (h *harness) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("watcher Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (h *harness) put(t *testing.T, key, val string) int64 {
	t.Helper()
	resp, err := h.cli.Put(context.Background(), key, val)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func (h *harness) del(t *testing.T, key string) {
	t.Helper()
	if _, err := h.cli.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// storeSummary renders what the store holds from etcd, sorted.
func storeSummary(s *state.Store) string {
	var out []string
	for _, n := range s.Networks() {
		out = append(out, "net "+n.Key+" "+n.Subnet.String())
	}
	for _, l := range s.Leases() {
		out = append(out, "lease "+l.Subnet.String()+" "+l.Raw.BackendType+" "+l.PublicIP.String())
	}
	for _, h := range s.Hosts() {
		out = append(out, "host "+h.Host)
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func TestListValidatesAndWatchFollows(t *testing.T) {
	h := newHarness(t)
	h.put(t, keys.Network("h2", "web"), record)
	h.put(t, keys.Host("h2"), hostRec)
	h.put(t, sub("198.19.2.0/24"), reserved)
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	h.put(t, keys.Records()+registry.QuarantineDir+"/x", "anything") // ours, not state, not invalid
	// Invalid items.
	badKeys := []string{
		sub("10.5.36.0/24"),             // garbage
		sub("10.5.37.0/24"),             // loopback PublicIP
		sub("10.5.38.0/24"),             // multicast MAC
		keys.Subnets() + "10.5.39.1-24", // host bits in the key
		keys.Network("h3", "db"),        // value names another host
		keys.Host("h4"),                 // host record names another host
	}
	revs := map[string]int64{}
	revs[badKeys[0]] = h.put(t, badKeys[0], "{{garbage")
	revs[badKeys[1]] = h.put(t, badKeys[1], strings.Replace(vxlanLease, "198.51.100.2", "127.0.0.1", 1))
	revs[badKeys[2]] = h.put(t, badKeys[2], strings.Replace(vxlanLease, "c6:a7", "01:00", 1))
	revs[badKeys[3]] = h.put(t, badKeys[3], vxlanLease)
	revs[badKeys[4]] = h.put(t, badKeys[4], record)
	revs[badKeys[5]] = h.put(t, badKeys[5], hostRec)

	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.store.Synced("etcd") {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	want := strings.Join([]string{
		"host h2",
		"lease 10.5.35.0/24 vxlan 198.51.100.2",
		"lease 198.19.2.0/24 flannel-registrar 0.0.0.0",
		"net /flannel/network/subnets/h2/web 198.19.2.0/24",
	}, "\n")
	if got := storeSummary(h.store); got != want {
		t.Fatalf("store after list:\n%s\nwant\n%s", got, want)
	}
	if got := h.w.Invalid(); got != uint64(len(badKeys)) {
		t.Errorf("Invalid() = %d, want %d", got, len(badKeys))
	}
	for _, k := range badKeys {
		if !h.rec.has(&h.rec.invalid, fmt.Sprintf("%s@%d", k, revs[k])) {
			t.Errorf("invalid %s@%d not reported", k, revs[k])
		}
	}
	if !h.rec.has(&h.rec.triggers, "etcd:list") {
		t.Errorf("no event with trigger etcd:list: %v", h.rec.triggers)
	}
	l, _ := h.store.Lease(netip.MustParsePrefix("10.5.35.0/24"))
	if l.VNI != 1 || l.VtepMAC.String() != "c6:a7:e4:a5:a1:dd" || !l.IsVXLAN() {
		t.Errorf("vxlan lease decoded as %+v", l)
	}
	r, _ := h.store.Lease(netip.MustParsePrefix("198.19.2.0/24"))
	if r.Reservation == nil || r.Reservation.Host != "h2" || r.Reservation.Network != "web" {
		t.Errorf("reservation decoded as %+v", r)
	}

	// Watch: put, delete, and a valid item turning invalid.
	newKey := sub("10.5.40.0/24")
	h.put(t, newKey, vxlanLease)
	h.del(t, keys.Host("h2"))
	badRev := h.put(t, keys.Network("h2", "web"), strings.Replace(record, "198.51.100.2", "0.0.0.0", 1))
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := h.store.Lease(netip.MustParsePrefix("10.5.40.0/24")); !ok {
			return fmt.Errorf("new lease missing")
		}
		if _, ok := h.store.Host("h2"); ok {
			return fmt.Errorf("deleted host still there")
		}
		if _, ok := h.store.Network(keys.Network("h2", "web")); ok {
			return fmt.Errorf("record that turned invalid still there")
		}
		return nil
	})
	for _, tr := range []string{"etcd:put " + newKey, "etcd:delete " + keys.Host("h2"), "etcd:put " + keys.Network("h2", "web")} {
		if !h.rec.has(&h.rec.triggers, tr) {
			t.Errorf("no event with trigger %q", tr)
		}
	}
	if !h.rec.has(&h.rec.invalid, fmt.Sprintf("%s@%d", keys.Network("h2", "web"), badRev)) {
		t.Error("record turned invalid not reported")
	}
	if got, want := h.w.Invalid(), uint64(len(badKeys)+1); got != want {
		t.Errorf("Invalid() = %d, want %d", got, want)
	}
}

// TestRelistAfterCompaction stops the watcher, changes etcd and compacts past
// the watcher's revision: the resumed watch fails with ErrCompacted, the
// watcher re-lists and the store converges, deletions included.
func TestRelistAfterCompaction(t *testing.T) {
	h := newHarness(t)
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	h.put(t, sub("10.5.36.0/24"), vxlanLease)
	stop := h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(h.store.Leases()) != 2 {
			return fmt.Errorf("leases %d, want 2", len(h.store.Leases()))
		}
		return nil
	})
	stop()
	before := h.w.Stats()

	h.del(t, sub("10.5.35.0/24"))
	h.put(t, sub("10.5.37.0/24"), vxlanLease)
	h.put(t, keys.Network("h2", "web"), record)
	h.srv.Compact(t, h.srv.Revision(t))

	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		want := strings.Join([]string{
			"lease 10.5.36.0/24 vxlan 198.51.100.2",
			"lease 10.5.37.0/24 vxlan 198.51.100.2",
			"net /flannel/network/subnets/h2/web 198.19.2.0/24",
		}, "\n")
		if got := storeSummary(h.store); got != want {
			return fmt.Errorf("store:\n%s\nwant\n%s", got, want)
		}
		return nil
	})
	st := h.w.Stats()
	if st.Compacted != before.Compacted+1 || st.Relists != before.Relists+1 {
		t.Errorf("stats %+v (before %+v): want one compaction and one re-list more", st, before)
	}
	if !h.rec.has(&h.rec.triggers, "etcd:relist (compacted)") {
		t.Error("no event with trigger etcd:relist (compacted)")
	}
}

// TestResumeWithoutCompaction: a watcher run again resumes from its revision
// and sees what changed meanwhile without a re-list.
func TestResumeWithoutCompaction(t *testing.T) {
	h := newHarness(t)
	stop := h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.store.Synced("etcd") {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	stop()
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := h.store.Lease(netip.MustParsePrefix("10.5.35.0/24")); !ok {
			return fmt.Errorf("lease written while stopped not seen")
		}
		return nil
	})
	if st := h.w.Stats(); st.Relists != 0 || st.Lists != 1 {
		t.Errorf("stats %+v: want one list and no re-list", st)
	}
}

// TestEtcdRestart: etcd stops and starts again while the watcher runs; the
// watcher keeps running and sees changes made after the restart.
func TestEtcdRestart(t *testing.T) {
	h := newHarness(t)
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	stop := h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(h.store.Leases()) != 1 {
			return fmt.Errorf("leases %d, want 1", len(h.store.Leases()))
		}
		return nil
	})
	h.srv.Stop()
	h.srv.Restart(t)
	h.put(t, sub("10.5.36.0/24"), vxlanLease)
	h.del(t, sub("10.5.35.0/24"))
	testutil.Eventually(t, 20*time.Second, func() error {
		want := "lease 10.5.36.0/24 vxlan 198.51.100.2"
		if got := storeSummary(h.store); got != want {
			return fmt.Errorf("store:\n%s\nwant\n%s", got, want)
		}
		return nil
	})
	stop() // Run returns nil: it kept running through the outage
}

func TestInvalidReportedOncePerRevision(t *testing.T) {
	h := newHarness(t)
	key := sub("10.5.35.0/24")
	h.put(t, key, "garbage")
	stop := h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.w.Invalid() != 1 {
			return fmt.Errorf("invalid %d", h.w.Invalid())
		}
		return nil
	})
	stop()
	// A re-list (forced by compaction) sees the same revision: not again.
	// Two writes: the compaction revision itself stays watchable.
	h.put(t, sub("10.5.36.0/24"), vxlanLease)
	h.put(t, sub("10.5.37.0/24"), vxlanLease)
	h.srv.Compact(t, h.srv.Revision(t))
	h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.w.Stats().Relists != 1 {
			return fmt.Errorf("no re-list yet")
		}
		return nil
	})
	if h.w.Invalid() != 1 || h.rec.count(&h.rec.invalid) != 1 {
		t.Errorf("invalid count %d, reports %v: want 1 after a re-list", h.w.Invalid(), h.rec.invalid)
	}
	// Fixing the value clears it from InvalidKeys.
	h.put(t, key, vxlanLease)
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(h.w.InvalidKeys()) != 0 {
			return fmt.Errorf("invalid keys %v", h.w.InvalidKeys())
		}
		return nil
	})
}

// TestEtcdWipedDataDir: etcd restarts with an empty data directory (same
// cluster ID, revisions from 1 again). The client resumes its watch at the
// old revision + 1, which the new etcd accepts and never serves; the watcher
// notices that etcd's revision went back, re-lists through OnRelist, and a
// lease written after the restart is in the store within 2s. Without the
// check the store stays frozen with the leases of the lost data.
func TestEtcdWipedDataDir(t *testing.T) {
	h := newHarness(t)
	for i := range 20 { // push the revision well above what the wiped etcd reaches
		h.put(t, sub(fmt.Sprintf("10.5.%d.0/24", 100+i)), vxlanLease)
	}
	stop := h.run(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(h.store.Leases()) != 20 {
			return fmt.Errorf("leases %d, want 20", len(h.store.Leases()))
		}
		return nil
	})
	h.srv.Wipe(t)
	h.put(t, sub("10.5.36.0/24"), vxlanLease)
	written := time.Now()
	testutil.Eventually(t, 2*time.Second, func() error {
		want := "lease 10.5.36.0/24 vxlan 198.51.100.2"
		if got := storeSummary(h.store); got != want {
			return fmt.Errorf("store:\n%s\nwant\n%s", got, want)
		}
		return nil
	})
	t.Logf("lease written after the wipe in the store after %s", time.Since(written).Round(time.Millisecond))
	relists := h.rec.snapshot(&h.rec.relists)
	if len(relists) == 0 || !strings.HasPrefix(relists[len(relists)-1], "etcd revision went back") {
		t.Errorf("re-list reasons %q: want the last one to be \"etcd revision went back ...\"", relists)
	}
	// Reported once, before the re-list replaced the 20 leases, with the
	// revisions that show it.
	losses := h.rec.snapshot(&h.rec.losses)
	var applied, rev, leases int
	if len(losses) != 1 || !strings.HasPrefix(losses[0], "etcd revision went back") {
		t.Fatalf("history losses reported %q: want one \"etcd revision went back ...\"", losses)
	}
	if _, err := fmt.Sscanf(losses[0][strings.LastIndex(losses[0], "|")+1:], "%d>%d leases=%d", &applied, &rev, &leases); err != nil || applied <= rev || leases != 20 {
		t.Errorf("history loss %q (parse: %v): want applied > revision and the 20 leases still in the store", losses[0], err)
	}
	// The watch from the new list's revision follows.
	h.put(t, sub("10.5.37.0/24"), vxlanLease)
	testutil.Eventually(t, 2*time.Second, func() error {
		if _, ok := h.store.Lease(netip.MustParsePrefix("10.5.37.0/24")); !ok {
			return fmt.Errorf("lease written after the re-list not seen")
		}
		return nil
	})
	stop()
}
