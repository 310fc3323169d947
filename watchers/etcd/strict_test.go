package etcd_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
	etcdwatch "github.com/flannel-registrar/flannel-registrar/watchers/etcd"
)

func (r *recorder) errOf(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[key]
}

func synced(t *testing.T, h *harness) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !h.store.Synced("etcd") {
			return fmt.Errorf("not synced")
		}
		return nil
	})
}

// TestStrictInput: ambiguous JSON (duplicate and case-variant keys), keys
// and values over the size caps, and names that break the host name or
// Docker network name rule are refused on the list and on the watch, each
// counted and reported once through OnInvalid with the rule it broke; the
// valid items around them are stored.
func TestStrictInput(t *testing.T) {
	h := newHarness(t)
	rec := func(host, network string) string {
		return strings.NewReplacer(`"Host":"h2"`, `"Host":"`+host+`"`, `"Network":"web"`, `"Network":"`+network+`"`).Replace(record)
	}
	bad := []struct{ key, value, rule string }{
		{keys.Network("h2", "dup"), strings.Replace(rec("h2", "dup"), `"Subnet":"198.19.2.0/24"`, `"Subnet":"198.19.2.0/24","Subnet":"0.0.0.0/0"`, 1), `duplicate key "Subnet"`},
		{keys.Network("h2", "case"), strings.Replace(rec("h2", "case"), `"Subnet":"198.19.2.0/24"`, `"Subnet":"198.19.2.0/24","subnet":"0.0.0.0/0"`, 1), `keys "Subnet" and "subnet" differ only in case`},
		{sub("10.5.50.0/24"), strings.Replace(vxlanLease, `"PublicIP"`, `"PUBLICIP"`, 1), `key "PUBLICIP" is not "PublicIP"`},
		{sub("10.5.51.0/24"), strings.Replace(vxlanLease, `"VNI":1`, `"VNI":1,"vni":2`, 1), `keys "VNI" and "vni" in BackendData differ only in case`},
		{keys.Host("h3"), `{"Host":"h3","host":"h2","PublicIP":"198.51.100.3"}`, "differ only in case"},
		{sub("10.5.52.0/24"), strings.Replace(vxlanLease, `"BackendType"`, `"Pad":"`+strings.Repeat("x", 4096)+`","BackendType"`, 1), "over the size cap of 4096 bytes"},
		{keys.Network("h2", strings.Repeat("n", 520)), rec("h2", strings.Repeat("n", 520)), "over the size cap of 512 bytes"},
		{keys.Network("h_2", "web"), rec("h_2", "web"), "host name \"h_2\": expected a hostname"},
		{keys.Network("h2", "-web"), rec("h2", "-web"), "network name \"-web\": expected a Docker network name"},
		{keys.Network("h2", "we b"), rec("h2", "we b"), "expected a Docker network name"},
		{keys.Host("bad.-host"), `{"Host":"bad.-host","PublicIP":"198.51.100.3"}`, "expected a hostname"},
		{sub("10.5.53.0/24"), strings.Replace(reserved, `"Network":"web"`, `"Network":"web!"`, 1), "expected a Docker network name"},
		{sub("10.5.54.0/24"), strings.Replace(reserved, `"Host":"h2"`, `"Host":"h2/x"`, 1), "expected a hostname"},
	}
	h.put(t, keys.Network("h2", "web"), record)
	h.put(t, sub("10.5.35.0/24"), vxlanLease)
	for _, b := range bad[:7] { // half before the list, half on the watch
		h.put(t, b.key, b.value)
	}
	h.run(t)
	synced(t, h)
	for _, b := range bad[7:] {
		h.put(t, b.key, b.value)
	}
	h.put(t, sub("10.5.36.0/24"), vxlanLease) // a valid item after them all
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := h.store.Lease(netip.MustParsePrefix("10.5.36.0/24")); !ok {
			return fmt.Errorf("last lease not seen")
		}
		return nil
	})
	want := strings.Join([]string{
		"lease 10.5.35.0/24 vxlan 198.51.100.2",
		"lease 10.5.36.0/24 vxlan 198.51.100.2",
		"net /flannel/network/subnets/h2/web 198.19.2.0/24",
	}, "\n")
	if got := storeSummary(h.store); got != want {
		t.Errorf("store:\n%s\nwant\n%s", got, want)
	}
	for _, b := range bad {
		if got := h.rec.errOf(b.key); !strings.Contains(got, b.rule) {
			t.Errorf("%.80s: reported %q, want the rule %q", b.key, got, b.rule)
		}
	}
	if got := h.w.Invalid(); got != uint64(len(bad)) || h.rec.count(&h.rec.invalid) != len(bad) {
		t.Errorf("Invalid() = %d, reports %d; want %d each", got, h.rec.count(&h.rec.invalid), len(bad))
	}
}

// TestRecordCapPerHost: with a cap of 3 records per host name, a host with
// five keeps its first three in key order, on the list and as keys come and
// go on the watch (a new key sorting first takes the place of the last; a
// deleted one frees its place for the next); other hosts are not affected.
func TestRecordCapPerHost(t *testing.T) {
	h := newHarness(t, func(o *etcdwatch.Options) { o.MaxRecordsPerHost = 3 })
	rec := func(host, network string, third int) string {
		return strings.NewReplacer(`"Host":"h2"`, `"Host":"`+host+`"`, `"Network":"web"`, `"Network":"`+network+`"`,
			"198.19.2.0/24", fmt.Sprintf("198.19.%d.0/24", third), "198.19.2.1", fmt.Sprintf("198.19.%d.1", third)).Replace(record)
	}
	for i := range 5 {
		h.put(t, keys.Network("h2", fmt.Sprintf("n%d", i)), rec("h2", fmt.Sprintf("n%d", i), 10+i))
	}
	h.put(t, keys.Network("h3", "n0"), rec("h3", "n0", 30))
	nets := func() string {
		var out []string
		for _, n := range h.store.Networks() {
			out = append(out, strings.TrimPrefix(n.Key, keys.Records()))
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	h.run(t)
	synced(t, h)
	if got, want := nets(), "h2/n0 h2/n1 h2/n2 h3/n0"; got != want {
		t.Fatalf("after list: %s, want %s", got, want)
	}
	for _, k := range []string{"n3", "n4"} {
		if e := h.rec.errOf(keys.Network("h2", k)); !strings.Contains(e, "more than 3 network records") {
			t.Errorf("h2/%s reported %q", k, e)
		}
	}
	step := func(what, want string, do func()) {
		t.Helper()
		do()
		testutil.Eventually(t, 10*time.Second, func() error {
			if got := nets(); got != want {
				return fmt.Errorf("after %s: %s, want %s", what, got, want)
			}
			return nil
		})
	}
	step("a new key sorting first", "h2/a h2/n0 h2/n1 h3/n0", func() { h.put(t, keys.Network("h2", "a"), rec("h2", "a", 20)) })
	step("a key over the cap updated", "h2/a h2/n0 h2/n1 h3/n0", func() { h.put(t, keys.Network("h2", "n4"), rec("h2", "n4", 21)) })
	step("an admitted key deleted", "h2/a h2/n1 h2/n2 h3/n0", func() { h.del(t, keys.Network("h2", "n0")) })
	step("two more deleted", "h2/a h2/n3 h2/n4 h3/n0", func() {
		h.del(t, keys.Network("h2", "n1"))
		h.del(t, keys.Network("h2", "n2"))
	})
	if n, _ := h.store.Network(keys.Network("h2", "n4")); n.Subnet.String() != "198.19.21.0/24" {
		t.Errorf("h2/n4 admitted with %s, want its latest value 198.19.21.0/24", n.Subnet)
	}
	if len(h.rec.snapshot(&h.rec.relists)) != 0 {
		t.Errorf("re-lists %v: the cap needs none", h.rec.snapshot(&h.rec.relists))
	}
}

// pagingKV counts the list's range requests and, after the first page,
// writes a new key and deletes a listed one, both of which the list (at the
// first page's revision) must not see and the watch must.
type pagingKV struct {
	clientv3.KV
	real   clientv3.KV
	prefix string
	pages  atomic.Int32
	once   sync.Once
	during func()
}

func (k *pagingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := k.real.Get(ctx, key, opts...)
	if strings.HasPrefix(key, k.prefix) && err == nil {
		if k.pages.Add(1) == 1 {
			k.once.Do(k.during)
		}
	}
	return resp, err
}

// TestListPaginated: 5,000 leases listed in pages of 1,000 at one revision
// (a write between pages is not in the list but comes by the watch, which
// continues from the list's revision); the store gets them all.
func TestListPaginated(t *testing.T) {
	h := newHarness(t, func(o *etcdwatch.Options) { o.PageSize = 1000 })
	const n = 5000
	var ops []clientv3.Op
	flush := func() {
		if _, err := h.cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range n {
		ops = append(ops, clientv3.OpPut(sub(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)), vxlanLease))
		if len(ops) == 100 {
			flush()
		}
	}
	// The watcher's client lists through pagingKV.
	wcli := h.srv.Client(t)
	pk := &pagingKV{real: wcli.KV, prefix: keys.Subnets(), during: func() {
		h.put(t, sub("10.200.0.0/24"), vxlanLease)
		h.del(t, sub("10.100.0.0/24"))
	}}
	wcli.KV = pk
	h.w, _ = etcdwatch.New(etcdwatch.Options{Client: wcli, Keys: keys, Store: h.store, PageSize: 1000,
		OnRelist: func(r string) { h.rec.add(&h.rec.relists, r) }})
	h.run(t)
	synced(t, h)
	if p := pk.pages.Load(); p != n/1000 {
		t.Errorf("%d range requests for %d leases, want %d pages", p, n, n/1000)
	}
	// The list ran at the first page's revision, before the writes between
	// pages; the watch from there brings both changes.
	testutil.Eventually(t, 10*time.Second, func() error {
		ls := h.store.Leases()
		_, added := h.store.Lease(netip.MustParsePrefix("10.200.0.0/24"))
		_, deleted := h.store.Lease(netip.MustParsePrefix("10.100.0.0/24"))
		if len(ls) != n || !added || deleted {
			return fmt.Errorf("%d leases (want %d), new one %v, deleted one still there %v", len(ls), n, added, deleted)
		}
		return nil
	})
	for _, tr := range []string{"etcd:put " + sub("10.200.0.0/24"), "etcd:delete " + sub("10.100.0.0/24")} {
		if !h.rec.has(&h.rec.triggers, tr) {
			t.Errorf("no store event %q: the list did not read every page at one revision", tr)
		}
	}
	if st := h.w.Stats(); st.Lists != 1 || st.Relists != 0 || st.Events != 2 {
		t.Errorf("stats %+v: want one list, no re-list, the two changes by the watch", st)
	}
}

// TestDualStackLeaseKeys: flanneld's dual-stack lease keys
// ("10.5.35.0-24&fd00::-64") are stored under their IPv4 subnet with the
// IPv6 one kept; IPv6-only keys are ignored (not invalid). Two keys of one
// IPv4 subnet: the first in key order is used, the other reported, on the
// list and on the watch, and deleting the used one brings the other back.
func TestDualStackLeaseKeys(t *testing.T) {
	h := newHarness(t)
	dual := keys.Subnets() + "10.5.35.0-24&fd00::-64"
	other := strings.Replace(vxlanLease, "198.51.100.2", "198.51.100.7", 1)
	h.put(t, dual, vxlanLease)
	h.put(t, keys.Subnets()+"0.0.0.0-0&fd00:1::-64", vxlanLease)
	h.put(t, keys.Subnets()+"10.5.36.0-24&fd00:36::-64", vxlanLease)
	h.put(t, keys.Subnets()+"10.5.36.0-24&fd00:37::-64", other) // same IPv4 subnet, sorts second
	h.run(t)
	synced(t, h)
	want := strings.Join([]string{
		"lease 10.5.35.0/24 vxlan 198.51.100.2",
		"lease 10.5.36.0/24 vxlan 198.51.100.2",
	}, "\n")
	if got := storeSummary(h.store); got != want {
		t.Fatalf("store after list:\n%s\nwant\n%s", got, want)
	}
	l, _ := h.store.Lease(netip.MustParsePrefix("10.5.35.0/24"))
	if l.Subnet6 != netip.MustParsePrefix("fd00::/64") || l.VtepMAC.String() != "c6:a7:e4:a5:a1:dd" {
		t.Errorf("dual-stack lease stored as %+v", l)
	}
	if e := h.rec.errOf(keys.Subnets() + "10.5.36.0-24&fd00:37::-64"); !strings.Contains(e, "names the IPv4 subnet of lease key") {
		t.Errorf("second key of one subnet reported %q", e)
	}
	if h.w.Invalid() != 1 {
		t.Errorf("Invalid() = %d, want 1 (the IPv6-only key is not invalid)", h.w.Invalid())
	}
	leaseIP := func(p string) string {
		l, ok := h.store.Lease(netip.MustParsePrefix(p))
		if !ok {
			return "none"
		}
		return l.PublicIP.String() + " " + l.Subnet6.String()
	}
	step := func(what, p, want string, do func()) {
		t.Helper()
		do()
		testutil.Eventually(t, 10*time.Second, func() error {
			if got := leaseIP(p); got != want {
				return fmt.Errorf("after %s: lease %s is %s, want %s", what, p, got, want)
			}
			return nil
		})
	}
	plain := sub("10.5.35.0/24")
	step("a plain key of the same subnet (sorts first)", "10.5.35.0/24", "198.51.100.7 invalid Prefix",
		func() { h.put(t, plain, other) })
	if e := h.rec.errOf(dual); !strings.Contains(e, "comes first in key order") {
		t.Errorf("displaced dual-stack key reported %q", e)
	}
	step("the dual-stack key updated while shadowed", "10.5.35.0/24", "198.51.100.7 invalid Prefix",
		func() { h.put(t, dual, strings.Replace(vxlanLease, "198.51.100.2", "198.51.100.8", 1)) })
	step("the plain key deleted", "10.5.35.0/24", "198.51.100.8 fd00::/64", func() { h.del(t, plain) })
	step("the shadowed key deleted", "10.5.36.0/24", "198.51.100.2 fd00:36::/64",
		func() { h.del(t, keys.Subnets()+"10.5.36.0-24&fd00:37::-64") })
	step("the last key deleted", "10.5.36.0/24", "none", func() { h.del(t, keys.Subnets()+"10.5.36.0-24&fd00:36::-64") })
	step("the dual-stack key deleted", "10.5.35.0/24", "none", func() { h.del(t, dual) })
}
