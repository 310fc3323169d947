package forwarding

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

func local(name, cidr string) state.LocalNetwork {
	return state.LocalNetwork{ID: name + "-0123456789abcdef", Name: name, Subnet: netip.MustParsePrefix(cidr), Bridge: "br-" + name}
}

func newController(t *testing.T, f *fakeIPT, nets ...state.LocalNetwork) (*Controller, *state.Store) {
	t.Helper()
	s := state.New()
	s.ReplaceLocal(nets, "test")
	c, err := New(s, Options{IPTables: f, IPSets: newFakeSets()})
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func reconcileOK(t *testing.T, c *Controller) []string {
	t.Helper()
	ctx, rec := reconcile.WithRecorder(context.Background())
	if err := c.Reconcile(ctx, Key); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return rec.Changes()
}

func wantChain(t *testing.T, f *fakeIPT, table, chain, want string) {
	t.Helper()
	if got := f.dump(table, chain); got != want {
		t.Errorf("%s %s:\n got %s\nwant %s", table, chain, got, want)
	}
}

func TestFreshHostWithoutDocker(t *testing.T) {
	f := newFake()
	c, _ := newController(t, f, local("app1", "10.5.35.0/24"))
	changes := reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, "-d 10.5.35.0/24 -i flannel.1 -j ACCEPT; -s 10.5.35.0/24 -o flannel.1 -j ACCEPT")
	wantChain(t, f, "filter", Forward, "-j "+FilterChain)
	wantChain(t, f, "nat", NATChain, "-s 10.5.35.0/24 -o flannel.1 -j ACCEPT")
	wantChain(t, f, "nat", PostRouting, "-j "+NATChain)
	if len(changes) != 7 || uint64(f.writes) != c.Writes() {
		t.Errorf("changes %d (%v), writes %d, counted %d", len(changes), changes, f.writes, c.Writes())
	}
	if again := reconcileOK(t, c); len(again) != 0 {
		t.Errorf("second reconcile changed %v", again)
	}
}

func dockerLike(f *fakeIPT) {
	_ = f.NewChain("filter", DockerUser)
	_ = f.Append("filter", DockerUser, "-j", "RETURN")
	_ = f.Append("filter", Forward, "-j", DockerUser)
	_ = f.Append("filter", Forward, "-o", "docker0", "-j", "DOCKER")
	_ = f.Append("nat", PostRouting, "-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE")
	f.writes = 0
}

func TestDockerUserPreferredAndStaleForwardJumpRemoved(t *testing.T) {
	f := newFake()
	dockerLike(f)
	_ = f.NewChain("filter", FilterChain)
	_ = f.Insert("filter", Forward, 1, "-j", FilterChain) // from before Docker started
	c, _ := newController(t, f, local("app1", "10.5.35.0/24"))
	reconcileOK(t, c)
	wantChain(t, f, "filter", DockerUser, "-j "+FilterChain+"; -j RETURN")
	wantChain(t, f, "filter", Forward, "-j DOCKER-USER; -o docker0 -j DOCKER")
	wantChain(t, f, "nat", PostRouting, "-j "+NATChain+"; -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
}

func TestJumpMovedBackToFirstAfterDockerInserts(t *testing.T) {
	f := newFake()
	dockerLike(f)
	c, _ := newController(t, f, local("app1", "10.5.35.0/24"))
	reconcileOK(t, c)
	// Docker creates a network: it inserts its MASQUERADE at the top.
	_ = f.Insert("nat", PostRouting, 1, "-s", "10.9.0.0/24", "!", "-o", "br-x", "-j", "MASQUERADE")
	changes := reconcileOK(t, c)
	want := []string{
		"iptables -t nat -D POSTROUTING -j " + NATChain,
		"iptables -t nat -I POSTROUTING 1 -j " + NATChain,
	}
	if !slices.Equal(changes, want) {
		t.Errorf("changes %q, want %q", changes, want)
	}
	wantChain(t, f, "nat", PostRouting, "-j "+NATChain+"; -s 10.9.0.0/24 ! -o br-x -j MASQUERADE; -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
}

func TestDuplicateAndConditionalJumpsCollapse(t *testing.T) {
	f := newFake()
	_ = f.NewChain("nat", NATChain)
	_ = f.Append("nat", PostRouting, "-j", "MASQUERADE")
	_ = f.Append("nat", PostRouting, "-j", NATChain)
	_ = f.Append("nat", PostRouting, "-o", "eth0", "-j", NATChain)
	c, _ := newController(t, f)
	reconcileOK(t, c)
	wantChain(t, f, "nat", PostRouting, "-j "+NATChain+"; -j MASQUERADE")
}

func TestNetworkRemovedAndForeignRulesSwept(t *testing.T) {
	f := newFake()
	dockerLike(f)
	c, s := newController(t, f, local("app1", "10.5.35.0/24"), local("app2", "10.5.36.0/24"))
	reconcileOK(t, c)
	_ = f.Append("filter", FilterChain, "-s", "1.2.3.4/32", "-j", "ACCEPT") // not ours to have there
	_ = f.Append("filter", FilterChain, "-d", "10.5.35.0/24", "-i", "flannel.1", "-j", "ACCEPT")
	s.DeleteLocal("app1", "test")
	changes := reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, "-d 10.5.36.0/24 -i flannel.1 -j ACCEPT; -s 10.5.36.0/24 -o flannel.1 -j ACCEPT")
	wantChain(t, f, "nat", NATChain, "-s 10.5.36.0/24 -o flannel.1 -j ACCEPT")
	if len(changes) != 5 {
		t.Errorf("changes: %q", changes)
	}
}

func TestRestoredAfterFlushAndChainDeleted(t *testing.T) {
	f := newFake()
	dockerLike(f)
	c, _ := newController(t, f, local("app1", "10.5.35.0/24"))
	reconcileOK(t, c)
	want := f.dump("filter", FilterChain)
	f.tables["filter"][FilterChain] = nil // iptables -F
	reconcileOK(t, c)
	wantChain(t, f, "filter", FilterChain, want)
	_ = f.DeleteById("nat", PostRouting, 1)
	_ = f.ClearAndDeleteChain("nat", NATChain)
	reconcileOK(t, c)
	wantChain(t, f, "nat", NATChain, "-s 10.5.35.0/24 -o flannel.1 -j ACCEPT")
	wantChain(t, f, "nat", PostRouting, "-j "+NATChain+"; -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
}

func TestFilterOption(t *testing.T) {
	f := newFake()
	s := state.New()
	s.ReplaceLocal([]state.LocalNetwork{local("app1", "10.5.35.0/24"), local("conflicted", "10.5.36.0/24")}, "test")
	c, err := New(s, Options{IPTables: f, IPSets: newFakeSets(), VXLAN: "vx0", Filter: func(n state.LocalNetwork) bool { return n.Name != "conflicted" }})
	if err != nil {
		t.Fatal(err)
	}
	reconcileOK(t, c)
	wantChain(t, f, "nat", NATChain, "-s 10.5.35.0/24 -o vx0 -j ACCEPT")
	if got := c.KeysFor(state.Event{Kind: state.KindNetwork}); !slices.Equal(got, []string{Key}) {
		t.Errorf("with a filter, network records concern us: %v", got)
	}
}

func TestKeys(t *testing.T) {
	c, _ := newController(t, newFake())
	if got := c.KeysFor(state.Event{Kind: state.KindLocal, Key: "app1"}); !slices.Equal(got, []string{Key}) {
		t.Errorf("KeysFor(local) = %v", got)
	}
	for _, k := range []state.Kind{state.KindNetwork, state.KindLease, state.KindLink} {
		if got := c.KeysFor(state.Event{Kind: k}); !slices.Equal(got, []string{Key}) {
			t.Errorf("KeysFor(%d) = %v: records, leases and the device decide group sets", k, got)
		}
	}
	for _, k := range []state.Kind{state.KindHost, state.KindSynced} {
		if got := c.KeysFor(state.Event{Kind: k}); got != nil {
			t.Errorf("KeysFor(%d) = %v", k, got)
		}
	}
	if keys, _ := c.Keys(context.Background()); !slices.Equal(keys, []string{Key}) {
		t.Errorf("Keys = %v", keys)
	}
	f := newFake()
	c, _ = newController(t, f, local("app1", "10.5.35.0/24"))
	if err := c.Reconcile(context.Background(), "other"); err != nil || f.writes != 0 {
		t.Errorf("unknown key: err %v, writes %d", err, f.writes)
	}
}

// Any order of networks, and any starting mess, converges to the same sets.
func TestConvergesWhateverTheOrder(t *testing.T) {
	nets := []state.LocalNetwork{local("a", "10.5.1.0/24"), local("b", "10.5.2.0/24"), local("c", "198.18.3.0/24"), local("d", "10.6.0.0/16")}
	var want string
	for i := range 30 {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		shuffled := slices.Clone(nets)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		f := newFake()
		dockerLike(f)
		// Start from a partial, shuffled state of our chain.
		_ = f.NewChain("filter", FilterChain)
		for _, rule := range FilterRules("flannel.1", shuffled[:r.IntN(len(shuffled))]) {
			_ = f.Append("filter", FilterChain, rule...)
		}
		c, _ := newController(t, f, shuffled...)
		reconcileOK(t, c)
		got := strings.Join(append(f.set("filter", FilterChain), f.set("nat", NATChain)...), "\n")
		if i == 0 {
			want = got
			if n := len(f.set("filter", FilterChain)); n != 8 {
				t.Fatalf("filter rules: %d\n%s", n, got)
			}
		} else if got != want {
			t.Fatalf("order %d converged to\n%s\nwant\n%s", i, got, want)
		}
		if again := reconcileOK(t, c); len(again) != 0 {
			t.Fatalf("not converged: %v", again)
		}
	}
}

func TestRemove(t *testing.T) {
	f := newFake()
	dockerLike(f)
	c, _ := newController(t, f, local("app1", "10.5.35.0/24"))
	reconcileOK(t, c)
	if err := c.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantChain(t, f, "filter", FilterChain, "<absent>")
	wantChain(t, f, "nat", NATChain, "<absent>")
	wantChain(t, f, "filter", DockerUser, "-j RETURN")
	wantChain(t, f, "nat", PostRouting, "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
}

func TestRuleKey(t *testing.T) {
	same := [][2]string{
		{"-d 10.0.0.0/24 -i flannel.1 -j ACCEPT", "-i flannel.1 -d 10.0.0.0/24 -j ACCEPT"},
		{"-s 10.0.0.0/24 ! -o br-1 -j MASQUERADE", "! -o br-1 -s 10.0.0.0/24 -j MASQUERADE"},
	}
	for _, p := range same {
		if ruleKey(strings.Fields(p[0])) != ruleKey(strings.Fields(p[1])) {
			t.Errorf("%q and %q differ", p[0], p[1])
		}
	}
	differ := [][2]string{
		{"-s 10.0.0.0/24 -d 10.1.0.0/24 -j ACCEPT", "-s 10.1.0.0/24 -d 10.0.0.0/24 -j ACCEPT"},
		{"-s 10.0.0.0/24 ! -o br-1 -j MASQUERADE", "-s 10.0.0.0/24 -o br-1 -j MASQUERADE"},
		{"-s 10.0.0.0/24 -o flannel.1 -j ACCEPT", "-s 10.0.0.0/24 -o flannel.1 -j RETURN"},
	}
	for _, p := range differ {
		if ruleKey(strings.Fields(p[0])) == ruleKey(strings.Fields(p[1])) {
			t.Errorf("%q and %q are equal", p[0], p[1])
		}
	}
}

func TestDirectRoutingWarning(t *testing.T) {
	for _, tc := range []struct {
		version string
		warn    bool
		has     string
	}{
		{"20.10.24+dfsg1", false, ""},
		{"27.5.1", false, ""},
		{"28.0.0", true, "DOCKER_INSECURE_NO_IPTABLES_RAW"},
		{"28.1.1", true, "upgrade to Docker 28.2"},
		{"28.2.0", true, "--allow-direct-routing"},
		{"28.5.2", true, "trusted_host_interfaces=flannel.1"},
		{"v29.0.0-rc.1", true, "--allow-direct-routing"},
		{"28.0-rc1", true, "28.0-rc1"},
		{"dev", true, "cannot read"},
		{"", true, "cannot read"},
	} {
		got := DirectRoutingWarning(tc.version, "")
		if (got != "") != tc.warn || !strings.Contains(got, tc.has) {
			t.Errorf("DirectRoutingWarning(%q) = %q; want warning %v containing %q", tc.version, got, tc.warn, tc.has)
		}
		if tc.warn && !strings.Contains(got, "49792") {
			t.Errorf("warning for %q does not cite moby/moby#49792: %q", tc.version, got)
		}
	}
}

type versionAPI struct {
	v   types.Version
	err error
}

func (a versionAPI) ServerVersion(context.Context) (types.Version, error) { return a.v, a.err }

func TestCheckDocker(t *testing.T) {
	ctx := context.Background()
	if w, err := CheckDocker(ctx, versionAPI{v: types.Version{Version: "20.10.24+dfsg1"}}, "flannel.1"); w != "" || err != nil {
		t.Errorf("20.10: %q, %v", w, err)
	}
	if w, err := CheckDocker(ctx, versionAPI{v: types.Version{Version: "28.5.2"}}, "vx9"); err != nil || !strings.Contains(w, "trusted_host_interfaces=vx9") {
		t.Errorf("28.5: %q, %v", w, err)
	}
	if _, err := CheckDocker(ctx, versionAPI{err: errors.New("down")}, ""); err == nil {
		t.Error("no error when Docker is down")
	}
}

func TestSplitAndJoinSpec(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"-s 10.0.0.0/24 ! -o br-1 -j MASQUERADE", []string{"-s", "10.0.0.0/24", "!", "-o", "br-1", "-j", "MASQUERADE"}},
		{`-m comment --comment "a \"b\" c" -j RETURN`, []string{"-m", "comment", "--comment", `a "b" c`, "-j", "RETURN"}},
		{`-m comment --comment "" -j RETURN`, []string{"-m", "comment", "--comment", "", "-j", "RETURN"}},
	} {
		got := splitSpec(tc.line)
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitSpec(%q) = %q, want %q", tc.line, got, tc.want)
		}
		if back := joinSpec(got); back != tc.line {
			t.Errorf("joinSpec(%q) = %q, want %q", got, back, tc.line)
		}
	}
}
