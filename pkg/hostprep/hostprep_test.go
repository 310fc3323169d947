package hostprep

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// set and get run on the thread that Netns.Do moved into the namespace.
func set(t *testing.T, key string, v int) {
	t.Helper()
	if err := os.WriteFile((sysctl{root: "/proc/sys"}).path(key), []byte(strconv.Itoa(v)), 0o644); err != nil {
		t.Fatalf("set %s: %v", key, err)
	}
}

func get(t *testing.T, key string) int {
	t.Helper()
	v, err := (sysctl{root: "/proc/sys"}).read(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func changed(cs []Change) []string {
	var out []string
	for _, c := range cs {
		if c.Changed() {
			out = append(out, c.String())
		}
	}
	return out
}

// With the device present: ip_forward and the device's rp_filter are set
// (conf.all stays strict), and a second run changes nothing.
func TestPrepareDevicePresent(t *testing.T) {
	ns := testutil.NewNetns(t, "hostprep")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, PeerName: "fl-peer"}
	if err := ns.Handle.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	err := ns.Do(func() error {
		set(t, "net.ipv4.ip_forward", 0)
		set(t, "net.ipv4.conf.all.rp_filter", 1)
		set(t, "net.ipv4.conf.flannel.1.rp_filter", 0) // effective max(1,0) = strict

		first, err := Prepare(Options{Iface: "flannel.1"})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"net.ipv4.ip_forward 0 -> 1", "net.ipv4.conf.flannel.1.rp_filter 0 -> 2"}
		got := changed(first)
		if len(got) != 2 || !strings.HasPrefix(got[0], want[0]) || !strings.HasPrefix(got[1], want[1]) {
			t.Errorf("first run changed %q, want %q", got, want)
		}
		if get(t, "net.ipv4.ip_forward") != 1 || get(t, "net.ipv4.conf.flannel.1.rp_filter") != 2 {
			t.Error("values not set in the namespace")
		}
		if get(t, "net.ipv4.conf.all.rp_filter") != 1 {
			t.Error("conf.all touched")
		}

		second, err := Prepare(Options{Iface: "flannel.1"})
		if err != nil {
			t.Fatal(err)
		}
		if got := changed(second); len(got) != 0 || len(second) != 2 {
			t.Errorf("second run changed %q (checked %d), want nothing of 2", got, len(second))
		}
		for _, c := range second {
			if !strings.Contains(c.String(), "(unchanged)") {
				t.Errorf("second run: %s", c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rp_filter already loose or off (not strict) is left alone.
func TestPrepareLeavesNonStrict(t *testing.T) {
	ns := testutil.NewNetns(t, "hostprep")
	if err := ns.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, PeerName: "fl-peer"}); err != nil {
		t.Fatal(err)
	}
	err := ns.Do(func() error {
		set(t, "net.ipv4.ip_forward", 1)
		set(t, "net.ipv4.conf.all.rp_filter", 0)
		set(t, "net.ipv4.conf.flannel.1.rp_filter", 0)
		cs, err := Prepare(Options{Iface: "flannel.1"})
		if err != nil {
			t.Fatal(err)
		}
		if got := changed(cs); len(got) != 0 {
			t.Errorf("changed %q with rp_filter off", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Without the device, conf.default is made loose so the device flanneld
// creates later is.
func TestPrepareDeviceAbsent(t *testing.T) {
	ns := testutil.NewNetns(t, "hostprep")
	err := ns.Do(func() error {
		set(t, "net.ipv4.ip_forward", 0)
		set(t, "net.ipv4.conf.all.rp_filter", 0)
		set(t, "net.ipv4.conf.default.rp_filter", 1)
		cs, err := Prepare(Options{Iface: "flannel.1"})
		if err != nil {
			t.Fatal(err)
		}
		got := changed(cs)
		if len(got) != 2 || !strings.HasPrefix(got[1], "net.ipv4.conf.default.rp_filter 1 -> 2: flannel.1 does not exist yet") {
			t.Errorf("changed %q", got)
		}
		if get(t, "net.ipv4.conf.default.rp_filter") != 2 {
			t.Error("conf.default not set")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrepareRejectsBadIface(t *testing.T) {
	for _, n := range []string{"", "..", "a/b"} {
		if _, err := Prepare(Options{Root: t.TempDir(), Iface: n}); err == nil {
			t.Errorf("iface %q accepted", n)
		}
	}
}
