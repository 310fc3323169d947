package app

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/controllers/fdb"
	"github.com/flannel-registrar/flannel-registrar/controllers/routes"
	nlwatch "github.com/flannel-registrar/flannel-registrar/watchers/netlink"
)

type queued struct{ calls []string }

func (q *queued) Enqueue(controller, key, _ string) { q.calls = append(q.calls, controller+" "+key) }

type hinted struct {
	name string
	keys []string
}

func (h *hinted) Name() string             { return h.name }
func (h *hinted) KernelChanged(key string) { h.keys = append(h.keys, key) }

// A kernel change reaches the hinted controller it concerns (so that the
// start dump's answer for that key is not used) as well as its queue.
func TestKernelChangesTellHintedControllers(t *testing.T) {
	q := &queued{}
	rt, fd := &hinted{name: routes.Name}, &hinted{name: fdb.Name}
	f := KernelChanges(q, func(netip.Addr) []string { return []string{"aa:bb:cc:00:00:09"} }, rt, fd)
	f(nlwatch.Change{Object: nlwatch.Route, Key: "10.5.1.0/24"})
	f(nlwatch.Change{Object: nlwatch.FDB, Key: "aa:bb:cc:00:00:01"})
	f(nlwatch.Change{Object: nlwatch.Neigh, Key: "10.5.2.0", MAC: "aa:bb:cc:00:00:02"})
	f(nlwatch.Change{Object: nlwatch.Link, Key: "flannel.1"})
	if !slices.Equal(rt.keys, []string{"10.5.1.0/24"}) {
		t.Errorf("routes told %v", rt.keys)
	}
	if !slices.Equal(fd.keys, []string{"aa:bb:cc:00:00:01", "10.5.2.0"}) {
		t.Errorf("fdb told %v", fd.keys)
	}
	want := []string{"routes 10.5.1.0/24", "fdb aa:bb:cc:00:00:01", "fdb aa:bb:cc:00:00:02", "fdb aa:bb:cc:00:00:09", "vxlan flannel.1"}
	if !slices.Equal(q.calls, want) {
		t.Errorf("queued %v, want %v", q.calls, want)
	}
}
