package fdb_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/vxlan"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

const iface = "flannel.1"

var localIP = netip.MustParseAddr("198.51.100.1")

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0, 0, b} }
func peerIP(n byte) netip.Addr    { return netip.AddrFrom4([4]byte{198, 51, 100, n}) }

type fixture struct {
	t     *testing.T
	ns    *testutil.Netns
	h     *netlinkx.Handle
	ul    netlink.Link
	vx    *netlink.Vxlan
	store *state.Store
	c     *fdb.Controller
}

func setup(t *testing.T) *fixture {
	ns := testutil.NewNetns(t, "frdp-fdb")
	f := &fixture{t: t, ns: ns, h: netlinkxtest.Handle(t, ns), store: state.New()}
	f.ul = netlinkxtest.Underlay(t, ns, localIP)
	f.vx = netlinkxtest.VXLAN(t, ns, iface, f.ul, localIP, nil)
	f.observe()
	f.c = fdb.New(f.h, f.store, fdb.Options{Host: "h1", SweepGrace: -1})
	return f
}

// observe lets the vxlan controller record the device in the store.
func (f *fixture) observe() {
	if err := vxlan.New(f.h, f.store, iface).Reconcile(context.Background(), iface); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) record(n byte, network, subnet string, vtep net.HardwareAddr) string {
	key := fmt.Sprintf("/flannel/network/subnets/h%d/%s", n, network)
	f.store.PutNetwork(key, registry.Network{Host: fmt.Sprintf("h%d", n), Network: network,
		Subnet: netip.MustParsePrefix(subnet), PublicIP: peerIP(n), VtepMAC: vtep, VNI: 1}, "test")
	return key
}

// selfLease stores this host's own flanneld lease (VtepMAC flannel.1's):
// what a real deployment has, and the proof that the store sees flanneld's
// registry, which sweeping entries no record wanted needs.
func (f *fixture) selfLease() {
	m := f.store.Link().MAC
	f.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24"), Raw: flannel.NewVXLAN(localIP, 1, m),
		PublicIP: localIP, VNI: 1, VtepMAC: m}, "test")
}

// pass reconciles every key once and returns what was recorded.
func (f *fixture) pass() []string {
	f.t.Helper()
	ctx, rec := reconcile.WithRecorder(context.Background())
	keys, err := f.c.Keys(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, k := range keys {
		if err := f.c.Reconcile(ctx, k); err != nil {
			f.t.Fatalf("reconcile %s: %v", k, err)
		}
	}
	return rec.Changes()
}

func (f *fixture) show(args ...string) string { return f.ns.Run(f.t, args[0], args[1:]...) }

func TestProgramsFlannelsEntries(t *testing.T) {
	f := setup(t)
	f.record(2, "a", "198.18.2.0/24", mac(2))
	f.record(2, "b", "198.18.3.0/24", mac(2))
	f.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Raw: flannel.NewVXLAN(peerIP(3), 1, mac(3)),
		PublicIP: peerIP(3), VNI: 1, VtepMAC: mac(3)}, "test")
	got := f.pass()
	want := []string{
		"fdb set aa:bb:cc:00:00:02 dst 198.51.100.2 dev flannel.1 self permanent",
		"neigh set 198.18.2.0 lladdr aa:bb:cc:00:00:02 dev flannel.1 nud permanent", // the VTEP's shared gateway
		"fdb set aa:bb:cc:00:00:03 dst 198.51.100.3 dev flannel.1 self permanent",
		"neigh set 198.18.4.0 lladdr aa:bb:cc:00:00:03 dev flannel.1 nud permanent",
	}
	if !slices.Equal(got, want) {
		t.Errorf("recorded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	fdbOut := f.show("bridge", "fdb", "show", "dev", iface)
	for _, w := range []string{"aa:bb:cc:00:00:02 dst 198.51.100.2 self permanent", "aa:bb:cc:00:00:03 dst 198.51.100.3 self permanent"} {
		if !strings.Contains(fdbOut, w) {
			t.Errorf("bridge fdb show lacks %q:\n%s", w, fdbOut)
		}
	}
	neighOut := f.show("ip", "neigh", "show", "dev", iface)
	for _, w := range []string{"198.18.2.0 lladdr aa:bb:cc:00:00:02 PERMANENT", "198.18.4.0 lladdr aa:bb:cc:00:00:03 PERMANENT"} {
		if !strings.Contains(neighOut, w) {
			t.Errorf("ip neigh show lacks %q:\n%s", w, neighOut)
		}
	}
	if strings.Contains(neighOut, "198.18.3.0") {
		t.Errorf("a record subnet other than its VTEP's lowest has its own neighbour:\n%s", neighOut)
	}
	w0 := f.h.Writes()
	if got := f.pass(); len(got) != 0 || f.h.Writes() != w0 {
		t.Errorf("second pass recorded %q and made %d writes, want nothing", got, f.h.Writes()-w0)
	}
}

// A peer's device recreated with a new MAC: the entries for the old MAC go,
// including after a restart of the controller (found by the dump).
func TestPeersOldMACSwept(t *testing.T) {
	f := setup(t)
	f.selfLease() // the restarted controller no longer knows the entry was a record's
	key := f.record(2, "a", "198.18.2.0/24", mac(2))
	f.pass()
	f.store.PutNetwork(key, registry.Network{Host: "h2", Network: "a", Subnet: netip.MustParsePrefix("198.18.2.0/24"),
		PublicIP: peerIP(2), VtepMAC: mac(0x22), VNI: 1}, "test")
	f.c = fdb.New(f.h, f.store, fdb.Options{Host: "h1", SweepGrace: -1}) // a restarted registrar knows nothing of the old MAC
	got := f.pass()
	want := []string{
		"fdb del aa:bb:cc:00:00:02 dst 198.51.100.2 dev flannel.1 self permanent",
		"fdb set aa:bb:cc:00:00:22 dst 198.51.100.2 dev flannel.1 self permanent",
		"neigh set 198.18.2.0 lladdr aa:bb:cc:00:00:22 dev flannel.1 nud permanent",
	}
	if !slices.Equal(got, want) {
		t.Errorf("recorded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out := f.show("bridge", "fdb", "show", "dev", iface); strings.Contains(out, mac(2).String()) {
		t.Errorf("old MAC still in the FDB:\n%s", out)
	}
}

// Removing the subnet that defines its VTEP's shared gateway moves the
// gateway to the next subnet (set before the old one is deleted); the VTEP's
// FDB entry stays while another subnet uses it, and goes with the last one.
func TestSubnetRemovalSweepsNeighbour(t *testing.T) {
	f := setup(t)
	a := f.record(2, "a", "198.18.2.0/24", mac(2))
	b := f.record(2, "b", "198.18.3.0/24", mac(2))
	f.pass()
	f.store.DeleteNetwork(a, "test")
	ctx, rec := reconcile.WithRecorder(context.Background())
	for _, k := range f.c.KeysFor(state.Event{Kind: state.KindNetwork, Key: a, Old: registry.Network{Subnet: netip.MustParsePrefix("198.18.2.0/24"), VtepMAC: mac(2)}}) {
		if err := f.c.Reconcile(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if got := rec.Changes(); !slices.Equal(got, []string{"neigh set 198.18.3.0 lladdr aa:bb:cc:00:00:02 dev flannel.1 nud permanent",
		"neigh del 198.18.2.0 lladdr aa:bb:cc:00:00:02 dev flannel.1 nud permanent"}) {
		t.Errorf("recorded %q, want the new shared gateway's neighbour, then the old one's deletion", got)
	}
	f.store.DeleteNetwork(b, "test")
	f.pass()
	if out := f.show("bridge", "fdb", "show", "dev", iface); strings.Contains(out, mac(2).String()) {
		t.Errorf("FDB entry of a VTEP without subnets remains:\n%s", out)
	}
	if out := f.show("ip", "neigh", "show", "dev", iface); strings.Contains(out, "lladdr") {
		t.Errorf("neighbours remain:\n%s", out)
	}
}

// Entries that are not flannel-shaped, or on other devices, are never touched.
func TestForeignEntriesNeverTouched(t *testing.T) {
	f := setup(t)
	for _, cmd := range [][]string{
		{"ip", "link", "add", "vx2", "type", "vxlan", "id", "2", "local", localIP.String(), "dstport", "8472", "nolearning"},
		{"ip", "link", "set", "vx2", "up"},
		{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", iface, "dst", "198.51.100.9", "self", "permanent"}, // flooding entry
		{"bridge", "fdb", "append", "aa:bb:cc:00:00:77", "dev", "vx2", "dst", "198.51.100.7", "self", "permanent"}, // other device
		{"ip", "neigh", "replace", "198.18.77.0", "lladdr", "aa:bb:cc:00:00:77", "dev", "vx2", "nud", "permanent"},
		{"ip", "neigh", "replace", "198.51.100.77", "lladdr", "aa:bb:cc:00:00:78", "dev", "ul0", "nud", "permanent"},
		{"ip", "neigh", "replace", "198.18.78.0", "lladdr", "aa:bb:cc:00:00:79", "dev", iface, "nud", "reachable"}, // not permanent
	} {
		f.show(cmd...)
	}
	before := [][]string{
		{"bridge", "fdb", "show"}, {"ip", "neigh", "show"},
	}
	var outs []string
	for _, cmd := range before {
		outs = append(outs, withoutResolution(f.show(cmd...)))
	}
	if got := f.pass(); len(got) != 0 {
		t.Errorf("recorded %q over foreign entries, want nothing", got)
	}
	for i, cmd := range before {
		if out := withoutResolution(f.show(cmd...)); out != outs[i] {
			t.Errorf("%v changed:\nbefore:\n%s\nafter:\n%s", cmd, outs[i], out)
		}
	}
}

// withoutResolution drops the neighbours the kernel itself creates while it
// resolves an address (INCOMPLETE, FAILED): the flooding entry above makes
// flannel.1 send to 198.51.100.9, which makes the kernel ARP for it on ul0
// at any moment. Nothing of ours ever has those states.
func withoutResolution(out string) string {
	var keep []string
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.Contains(line, "INCOMPLETE") && !strings.Contains(line, "FAILED") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// Without the device the controller waits: no writes, no errors.
func TestNoDeviceNoOp(t *testing.T) {
	f := setup(t)
	f.record(2, "a", "198.18.2.0/24", mac(2))
	if err := f.ns.Handle.LinkDel(f.vx); err != nil {
		t.Fatal(err)
	}
	f.observe()
	if f.store.Link().Present {
		t.Fatal("store still has the device")
	}
	if got := f.pass(); len(got) != 0 || f.h.Writes() != 0 {
		t.Errorf("recorded %q with %d writes without a device", got, f.h.Writes())
	}
}

func TestKeysFor(t *testing.T) {
	f := setup(t)
	f.record(2, "a", "198.18.2.0/24", mac(2))
	f.record(3, "a", "198.18.3.0/24", mac(3))
	p := netip.MustParsePrefix("198.18.2.0/24")
	for _, tc := range []struct {
		name string
		ev   state.Event
		want []string
	}{
		{"record moved to another VTEP", state.Event{Kind: state.KindNetwork,
			Old: registry.Network{Subnet: p, VtepMAC: mac(9)}, New: registry.Network{Subnet: p, VtepMAC: mac(2)}},
			[]string{mac(2).String(), mac(9).String()}},
		{"lease", state.Event{Kind: state.KindLease, New: state.Lease{Subnet: netip.MustParsePrefix("198.18.5.0/24"), VtepMAC: mac(5)}},
			[]string{mac(5).String()}},
		{"link: every wanted VTEP", state.Event{Kind: state.KindLink}, []string{mac(2).String(), mac(3).String()}},
		{"host: the VTEPs it vouches for, before and after", state.Event{Kind: state.KindHost,
			Old: registry.HostRecord{Host: "h2", VtepMAC: mac(9).String()}, New: registry.HostRecord{Host: "h2", VtepMAC: mac(2).String()}},
			[]string{mac(2).String(), mac(9).String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.c.KeysFor(tc.ev); !slices.Equal(got, tc.want) {
				t.Errorf("KeysFor = %v, want %v", got, tc.want)
			}
		})
	}
}

// Entries no record of ours wanted (flanneld's, for a lease our store does
// not hold: a wrong FLANNEL_PREFIX) are kept while the store holds no lease
// of this host, with no write and no error; entries a record wanted are
// swept as usual. With this host's lease they go.
func TestFlannelEntriesKeptWithoutLeaseOfThisHost(t *testing.T) {
	f := setup(t)
	for _, cmd := range [][]string{
		{"bridge", "fdb", "append", mac(7).String(), "dev", iface, "dst", peerIP(7).String(), "self", "permanent"},
		{"ip", "neigh", "replace", "198.18.7.0", "lladdr", mac(7).String(), "dev", iface, "nud", "permanent"},
	} {
		f.show(cmd...)
	}
	// A lease of another host does not prove we see flanneld's registry.
	f.store.PutLease(state.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Raw: flannel.NewVXLAN(peerIP(3), 1, mac(3)),
		PublicIP: peerIP(3), VNI: 1, VtepMAC: mac(3)}, "test")
	key := f.record(2, "a", "198.18.2.0/24", mac(2))
	f.pass()
	f.store.DeleteNetwork(key, "test")
	got := f.pass()
	want := []string{
		"neigh del 198.18.2.0 lladdr aa:bb:cc:00:00:02 dev flannel.1 nud permanent",
		"fdb del aa:bb:cc:00:00:02 dst 198.51.100.2 dev flannel.1 self permanent",
	}
	if !slices.Equal(got, want) {
		t.Errorf("recorded\n%s\nwant our record's entries swept only:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	w0 := f.h.Writes()
	if got := f.pass(); len(got) != 0 || f.h.Writes() != w0 {
		t.Errorf("pass recorded %q and made %d writes, want nothing", got, f.h.Writes()-w0)
	}
	if out := f.show("bridge", "fdb", "show", "dev", iface); !strings.Contains(out, mac(7).String()+" dst "+peerIP(7).String()+" self permanent") {
		t.Errorf("flanneld's FDB entry swept without a lease of this host:\n%s", out)
	}
	if out := f.show("ip", "neigh", "show", "dev", iface); !strings.Contains(out, "198.18.7.0 lladdr "+mac(7).String()+" PERMANENT") {
		t.Errorf("flanneld's neighbour swept without a lease of this host:\n%s", out)
	}

	f.selfLease()
	got = f.pass()
	want = []string{
		"fdb del aa:bb:cc:00:00:07 dst 198.51.100.7 dev flannel.1 self permanent",
		"neigh del 198.18.7.0 lladdr aa:bb:cc:00:00:07 dev flannel.1 nud permanent",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("with this host's lease recorded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// This host's lease appearing enqueues every known VTEP: entries may now be swept.
func TestKeysForSelfLease(t *testing.T) {
	f := setup(t)
	f.record(2, "a", "198.18.2.0/24", mac(2))
	m := f.store.Link().MAC
	own := state.Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24"), Raw: flannel.NewVXLAN(localIP, 1, m), PublicIP: localIP, VNI: 1, VtepMAC: m}
	got := f.c.KeysFor(state.Event{Kind: state.KindLease, New: own})
	if !slices.Contains(got, mac(2).String()) {
		t.Errorf("KeysFor(self lease) = %v, want every VTEP", got)
	}
}
