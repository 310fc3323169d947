package subnets_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/controllers/subnets"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/etcdtest"
)

var keys = registry.Keys{FlannelPrefix: "/coreos.com/network", ConfigPrefix: "/flannel/network/subnets"}

var mac1, _ = net.ParseMAC("c6:a7:e4:a5:a1:dd")

func link() state.Link {
	return state.Link{Name: "flannel.1", Present: true, Up: true, MAC: mac1, Local: netip.MustParseAddr("198.51.100.1"), VNI: 1, MTU: 1450}
}

func local(name, cidr string) state.LocalNetwork {
	p := netip.MustParsePrefix(cidr)
	return state.LocalNetwork{ID: "id-" + name, Name: name, Subnet: p, Gateway: p.Addr().Next(), Bridge: "br-" + name}
}

type conflictLog struct {
	mu            sync.Mutex
	seen, cleared []registry.ConflictError
}

func (l *conflictLog) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen), len(l.cleared)
}

func newRegistry(t *testing.T, cli *clientv3.Client, host string) *registry.Registry {
	t.Helper()
	r, err := registry.New(registry.Config{
		Client: cli, Keys: keys, Host: host,
		RegistrationTTL: time.Hour, HostLivenessTTL: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newController(t *testing.T, store *state.Store, reg *registry.Registry, cl *conflictLog) *subnets.Controller {
	t.Helper()
	c, err := subnets.New(subnets.Options{
		Store: store, Registry: reg, Version: "test",
		StartTime:         time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		OnConflict:        func(ce registry.ConflictError) { cl.mu.Lock(); cl.seen = append(cl.seen, ce); cl.mu.Unlock() },
		OnConflictCleared: func(ce registry.ConflictError) { cl.mu.Lock(); cl.cleared = append(cl.cleared, ce); cl.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reconcileKey runs one reconcile and returns what it recorded.
func reconcileKey(t *testing.T, c *subnets.Controller, key string) []string {
	t.Helper()
	ctx, rec := reconcile.WithRecorder(context.Background())
	if err := c.Reconcile(ctx, key); err != nil {
		t.Fatalf("reconcile %s: %v", key, err)
	}
	return rec.Changes()
}

func value(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func TestRegisterUnregister(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	c := newController(t, store, newRegistry(t, cli, "h1"), &conflictLog{})
	resKey := keys.Subnet(netip.MustParsePrefix("198.19.1.0/24"))

	// No VXLAN device yet: nothing is published.
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	if got := reconcileKey(t, c, "app1"); len(got) != 0 {
		t.Fatalf("changes without a device: %v", got)
	}
	if got := reconcileKey(t, c, subnets.HostKey); len(got) != 0 {
		t.Fatalf("host changes without a device: %v", got)
	}
	if value(t, cli, resKey) != "" || c.Waiting() == "" {
		t.Fatalf("published without a device (waiting %q)", c.Waiting())
	}
	// A device without a usable local address is not enough either.
	l := link()
	l.Local = netip.MustParseAddr("127.0.0.1")
	store.SetLink(l, "test")
	if reconcileKey(t, c, "app1"); value(t, cli, resKey) != "" {
		t.Fatal("published with a loopback PublicIP")
	}

	store.SetLink(link(), "test")
	if c.Waiting() != "" {
		t.Fatalf("still waiting: %s", c.Waiting())
	}
	if got := reconcileKey(t, c, "app1"); !slices.Equal(got, []string{"register network app1 198.19.1.0/24"}) {
		t.Fatalf("changes = %v", got)
	}
	if got := reconcileKey(t, c, "app1"); len(got) != 0 {
		t.Fatalf("second reconcile changed %v", got)
	}
	wantRec := `{"Host":"h1","Network":"app1","NetworkID":"id-app1","Subnet":"198.19.1.0/24","Gateway":"198.19.1.1","PublicIP":"198.51.100.1","VtepMAC":"c6:a7:e4:a5:a1:dd","VNI":1}`
	if got := value(t, cli, keys.Network("h1", "app1")); got != wantRec {
		t.Errorf("record = %s\nwant     %s", got, wantRec)
	}
	if got := reconcileKey(t, c, subnets.HostKey); len(got) != 1 {
		t.Errorf("host changes = %v, want one", got)
	}
	h, err := registry.DecodeHost([]byte(value(t, cli, keys.Host("h1"))))
	if err != nil || h.Networks != 1 || h.PublicIP != "198.51.100.1" || h.Version != "test" {
		t.Errorf("host record = %+v, %v", h, err)
	}

	// The device got a new MAC: the record follows.
	l = link()
	l.MAC, _ = net.ParseMAC("aa:bb:cc:dd:ee:01")
	store.SetLink(l, "test")
	if got := reconcileKey(t, c, "app1"); !slices.Equal(got, []string{"update network app1 198.19.1.0/24 (VtepMAC)"}) {
		t.Errorf("changes after new MAC = %v", got)
	}

	store.DeleteLocal("app1", "test")
	if got := reconcileKey(t, c, "app1"); !slices.Equal(got, []string{"unregister network app1 198.19.1.0/24"}) {
		t.Fatalf("changes = %v", got)
	}
	if value(t, cli, keys.Network("h1", "app1")) != "" || value(t, cli, resKey) != "" {
		t.Fatal("record or reservation left")
	}
	if got := reconcileKey(t, c, "app1"); len(got) != 0 {
		t.Fatalf("second unregister changed %v", got)
	}
}

func TestConflictReportedOnceAndCleared(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	other := newRegistry(t, srv.Client(t), "h2")
	mine := &conflictLog{}
	store := state.New()
	store.SetLink(link(), "test")
	c := newController(t, store, newRegistry(t, cli, "h1"), mine)
	ctx := context.Background()

	theirs := registry.Network{Host: "h2", Network: "web", Subnet: netip.MustParsePrefix("198.19.1.0/24"),
		PublicIP: netip.MustParseAddr("198.51.100.2"), VtepMAC: mac1, VNI: 1}
	if _, err := other.PutNetwork(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	resKey := keys.Subnet(theirs.Subnet)
	before := value(t, cli, resKey)
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	for range 3 { // resyncs
		if got := reconcileKey(t, c, "app1"); len(got) != 0 {
			t.Fatalf("a conflict recorded changes: %v", got)
		}
	}
	if seen, _ := mine.counts(); seen != 1 {
		t.Fatalf("OnConflict called %d times, want once", seen)
	}
	cs := c.Conflicts()
	if len(cs) != 1 || cs[0].Network != "app1" || cs[0].Claimant != "host h2 network web" || c.ConflictCount() != 1 {
		t.Fatalf("conflicts = %+v", cs)
	}
	if value(t, cli, resKey) != before || value(t, cli, keys.Network("h1", "app1")) != "" {
		t.Fatal("the conflict changed etcd")
	}
	reconcileKey(t, c, subnets.HostKey)
	if h, _ := registry.DecodeHost([]byte(value(t, cli, keys.Host("h1")))); h.Conflicts != 1 || h.Networks != 0 {
		t.Errorf("host record counts = %d networks %d conflicts, want 0 and 1", h.Networks, h.Conflicts)
	}

	if _, err := other.DeleteNetwork(ctx, "web", registry.Identity{PublicIP: theirs.PublicIP, VtepMAC: theirs.VtepMAC}); err != nil {
		t.Fatal(err)
	}
	if got := reconcileKey(t, c, "app1"); !slices.Equal(got, []string{"register network app1 198.19.1.0/24"}) {
		t.Fatalf("after the claimant left: %v", got)
	}
	if _, cleared := mine.counts(); cleared != 1 || c.ConflictCount() != 0 {
		t.Fatalf("cleared %d, conflicts %v", cleared, c.Conflicts())
	}
}

func TestKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	c := newController(t, store, newRegistry(t, cli, "h1"), &conflictLog{})
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	orphan, _ := flannel.Encode(flannel.NewReservation("h1", "gone"))
	if _, err := cli.Put(context.Background(), keys.Subnet(netip.MustParsePrefix("198.19.9.0/24")), string(orphan)); err != nil {
		t.Fatal(err)
	}
	// The resync reads the snapshot the watch keeps, not etcd: the orphan
	// is a key once the snapshot holds it.
	got, err := c.Keys(context.Background())
	if want := []string{"_host", "app1"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Keys before the snapshot has the orphan = %v, %v; want %v", got, err, want)
	}
	l, _ := flannel.Decode(orphan)
	store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.19.9.0/24"), Raw: l,
		Reservation: &flannel.ReservationData{Host: "h1", Network: "gone"}}, "test")
	store.PutNetwork(keys.Network("h1", "old"), registry.Network{Host: "h1", Network: "old", Subnet: netip.MustParsePrefix("198.19.8.0/24")}, "test")
	store.PutNetwork(keys.Network("h2", "theirs"), registry.Network{Host: "h2", Network: "theirs", Subnet: netip.MustParsePrefix("198.19.7.0/24")}, "test")
	got, err = c.Keys(context.Background())
	if want := []string{"_host", "app1", "gone", "old"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Keys = %v, %v; want %v", got, err, want)
	}
	store.DeleteNetwork(keys.Network("h1", "old"), "test")
	// The orphan is removed by its reconcile (hinted by the snapshot).
	// Without our identity an entry of our name may be a duplicate
	// registrar's: nothing is removed yet.
	if got := reconcileKey(t, c, "gone"); len(got) != 0 || value(t, cli, keys.Subnet(netip.MustParsePrefix("198.19.9.0/24"))) == "" {
		t.Fatalf("orphan reconcile without identity = %v", got)
	}
	store.SetLink(link(), "test")
	if got := reconcileKey(t, c, "gone"); !slices.Equal(got, []string{"unregister network gone 198.19.9.0/24"}) {
		t.Fatalf("orphan reconcile = %v", got)
	}
}

func TestKeysFor(t *testing.T) {
	srv := etcdtest.Start(t)
	store := state.New()
	c := newController(t, store, newRegistry(t, srv.Client(t), "h1"), &conflictLog{})
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	store.PutLocal(local("app2", "198.19.2.0/24"), "test")
	ours := &flannel.ReservationData{Host: "h1", Network: "old"}
	theirs := &flannel.ReservationData{Host: "h2", Network: "web"}
	l2 := link()
	l2.Up, l2.MTU = false, 1400
	l3 := link()
	l3.Local = netip.MustParseAddr("198.51.100.9")
	// Removed from Docker while flannel.1 was gone: still registered.
	store.PutNetwork(keys.Network("h1", "gone"), registry.Network{Host: "h1", Network: "gone", Subnet: netip.MustParsePrefix("198.19.8.0/24")}, "test")
	for _, tc := range []struct {
		name string
		ev   state.Event
		want []string
	}{
		{"local", state.Event{Kind: state.KindLocal, Key: "app9"}, []string{"app9", "_host"}},
		{"link appears", state.Event{Kind: state.KindLink, Key: "flannel.1", Old: state.Link{}, New: link()}, []string{"_host", "app1", "app2", "gone"}},
		{"link MTU only", state.Event{Kind: state.KindLink, Key: "flannel.1", Old: link(), New: l2}, nil},
		{"link address", state.Event{Kind: state.KindLink, Key: "flannel.1", Old: link(), New: l3}, []string{"_host", "app1", "app2", "gone"}},
		{"our record", state.Event{Kind: state.KindNetwork, Key: keys.Network("h1", "app1")}, []string{"app1"}},
		{"their record", state.Event{Kind: state.KindNetwork, Key: keys.Network("h2", "app1")}, nil},
		{"our reservation deleted", state.Event{Kind: state.KindLease, Key: "198.19.7.0/24", Old: state.Lease{Reservation: ours}}, []string{"old"}},
		{"their reservation on our subnet", state.Event{Kind: state.KindLease, Key: "198.19.1.0/24", New: state.Lease{Reservation: theirs}}, []string{"app1"}},
		{"flannel lease elsewhere", state.Event{Kind: state.KindLease, Key: "10.5.35.0/24", New: state.Lease{}}, nil},
		{"lease overlapping but not equal", state.Event{Kind: state.KindLease, Key: "198.19.0.0/16", New: state.Lease{}}, []string{"app1", "app2"}},
		{"lease inside one network", state.Event{Kind: state.KindLease, Key: "198.19.2.128/25", New: state.Lease{}}, []string{"app2"}},
		{"our host record", state.Event{Kind: state.KindHost, Key: "h1"}, []string{"_host"}},
		{"their host record", state.Event{Kind: state.KindHost, Key: "h2"}, nil},
		{"synced", state.Event{Kind: state.KindSynced, Key: "etcd"}, nil},
	} {
		if got := c.KeysFor(tc.ev); !slices.Equal(got, tc.want) {
			t.Errorf("%s: KeysFor = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNetworkStringer(t *testing.T) {
	// The conflict message names both sides.
	ce := registry.ConflictError{Subnet: netip.MustParsePrefix("198.19.1.0/24"), Network: "app1", Claimant: "host h2 network web", Key: "/k"}
	if got, want := ce.Error(), "subnet 198.19.1.0/24 of network app1 is claimed by host h2 network web (/k)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestQuarantineAndWithdrawRecorded: a legacy vxlan lease of this host at a
// local network's subnet is quarantined and replaced; a subnet change into a
// conflict withdraws the old record and reservation.
func TestQuarantineAndWithdrawRecorded(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := context.Background()
	store := state.New()
	store.SetLink(link(), "test")
	c := newController(t, store, newRegistry(t, cli, "h1"), &conflictLog{})
	legacy, _ := flannel.Encode(flannel.NewVXLAN(link().Local, 1, mac1))
	key := keys.Subnet(netip.MustParsePrefix("198.19.1.0/24"))
	if _, err := cli.Put(ctx, key, string(legacy)); err != nil {
		t.Fatal(err)
	}
	// This host's flanneld holds its own lease elsewhere: the TTL-less one
	// at app1's subnet is the original tool's, not a flannel reservation.
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, keys.Subnet(netip.MustParsePrefix("10.5.7.0/24")), string(legacy), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	store.PutLocal(local("app1", "198.19.1.0/24"), "test")
	got := reconcileKey(t, c, "app1")
	want := []string{
		"quarantine " + key + " (legacy vxlan lease of this host: " + string(legacy) + ") to /flannel/network/subnets/_quarantine/coreos.com/network/subnets/198.19.1.0-24",
		"register network app1 198.19.1.0/24",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("reconcile = %q\nwant        %q", got, want)
	}

	foreign, _ := flannel.Encode(flannel.NewReservation("h2", "web"))
	if _, err := cli.Put(ctx, keys.Subnet(netip.MustParsePrefix("198.19.2.0/24")), string(foreign)); err != nil {
		t.Fatal(err)
	}
	store.PutLocal(local("app1", "198.19.2.0/25"), "test")
	got = reconcileKey(t, c, "app1")
	if len(got) != 1 || !strings.HasPrefix(got[0], "withdraw network app1 198.19.1.0/24 (record and reservation): subnet 198.19.2.0/25 held by host h2 network web") {
		t.Fatalf("reconcile after the subnet change = %q", got)
	}
	if value(t, cli, keys.Network("h1", "app1")) != "" || value(t, cli, key) != "" {
		t.Error("old record or reservation still published")
	}
	if cs := c.Conflicts(); len(cs) != 1 || cs[0].Withdrawn {
		t.Errorf("conflicts = %+v", cs)
	}
}

// Isolation groups travel in the record, and a re-created network with
// another label set updates it.
func TestGroupsInRecord(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := state.New()
	store.SetLink(link(), "test")
	c := newController(t, store, newRegistry(t, cli, "h1"), &conflictLog{})
	n := local("app1", "198.19.1.0/24")
	n.Groups = []string{"db", "web"}
	store.PutLocal(n, "test")
	reconcileKey(t, c, "app1")
	rec := value(t, cli, keys.Network("h1", "app1"))
	if !strings.HasSuffix(rec, `"VNI":1,"Groups":["db","web"]}`) {
		t.Fatalf("record = %s", rec)
	}
	if got := reconcileKey(t, c, "app1"); len(got) != 0 {
		t.Fatalf("second reconcile changed %v", got)
	}
	n.Groups = []string{"web"}
	store.PutLocal(n, "test")
	if got := reconcileKey(t, c, "app1"); !slices.Equal(got, []string{"update network app1 198.19.1.0/24 (Groups)"}) {
		t.Errorf("changes after new groups = %v", got)
	}
	if rec := value(t, cli, keys.Network("h1", "app1")); !strings.HasSuffix(rec, `"VNI":1,"Groups":["web"]}`) {
		t.Errorf("record = %s", rec)
	}
	n.Groups = nil
	store.PutLocal(n, "test")
	reconcileKey(t, c, "app1")
	if rec := value(t, cli, keys.Network("h1", "app1")); strings.Contains(rec, "Groups") {
		t.Errorf("ungrouped record = %s", rec)
	}
}
