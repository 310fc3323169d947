package forwarding

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// etcd lost its data and was re-listed empty: while the hold lasts, the
// group set keeps the remote member that vanished (a new one still joins,
// and the reconcile asks to be run again); once it ends, the snapshot wins.
func TestHoldKeepsGroupMembers(t *testing.T) {
	c, s, _, sets := groupsController(t)
	hold := &reconcile.Hold{}
	c.hold = hold
	s.ReplaceLocal([]state.LocalNetwork{grouped("a", "198.18.1.0/24", "web")}, "test")
	putRec(s, rec(2, "b", "198.18.2.0/24", "web"))
	reconcileOK(t, c)
	both := map[string][]netip.Prefix{"FR-G-web": prefixes("198.18.1.0/24", "198.18.2.0/24")}
	if !reflect.DeepEqual(sets.sets, both) {
		t.Fatalf("sets: %v", sets.sets)
	}

	hold.Start(time.Hour) // ended by hand below: nothing here depends on timing
	s.ReplaceEtcd(state.EtcdView{Networks: map[string]registry.Network{}, Leases: map[netip.Prefix]state.Lease{},
		Hosts: map[string]registry.HostRecord{}}, "test:relist after history loss")
	putRec(s, rec(3, "c", "198.18.3.0/24", "web"))
	err := c.Reconcile(context.Background(), Key)
	var later *reconcile.RequeueError
	if !errors.As(err, &later) {
		t.Errorf("reconcile while held = %v, want a requeue for when the hold ends", err)
	}
	if want := map[string][]netip.Prefix{"FR-G-web": prefixes("198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24")}; !reflect.DeepEqual(sets.sets, want) {
		t.Errorf("sets while held: %v, want %v", sets.sets, want)
	}

	hold.End()
	reconcileOK(t, c)
	if want := map[string][]netip.Prefix{"FR-G-web": prefixes("198.18.1.0/24", "198.18.3.0/24")}; !reflect.DeepEqual(sets.sets, want) {
		t.Errorf("sets after the hold: %v, want %v", sets.sets, want)
	}
}
