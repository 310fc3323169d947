// Package vxlan observes flanneld's VXLAN device (flannel.1 by default) and
// records what it finds in the store: present, up, index, MAC, local
// address, MTU and VNI. It never creates or reconfigures the device; the
// other controllers react to the store's link events (a recreated device
// with a new MAC re-publishes this host's records and re-programs peers).
package vxlan

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// Name is the controller's name; its only key is the device name.
const Name = "vxlan"

// Controller observes one VXLAN device.
type Controller struct {
	h     *netlinkx.Handle
	store *state.Store
	iface string
}

// New returns a controller observing iface (e.g. "flannel.1") through h and
// writing the facts to store.
func New(h *netlinkx.Handle, store *state.Store, iface string) *Controller {
	return &Controller{h: h, store: store, iface: iface}
}

// Name implements reconcile.Controller.
func (c *Controller) Name() string { return Name }

// Keys returns the device name: there is one key.
func (c *Controller) Keys(context.Context) ([]string, error) { return []string{c.iface}, nil }

// KeysFor returns nothing: the netlink watcher enqueues the device on link
// notifications, and no store change alters the device.
func (c *Controller) KeysFor(state.Event) []string { return nil }

// Reconcile reads the device and stores its facts when they changed.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	if key != c.iface {
		return nil // not our device: nothing to observe
	}
	l, err := Observe(c.h, c.iface)
	if err != nil && !l.Present && l.Name == "" {
		return err // could not read: keep the last facts, retry
	}
	if old := c.store.Link(); !sameLink(old, l) {
		reconcile.Record(ctx, "observe "+Describe(l))
		c.store.SetLink(l, "vxlan:"+c.iface)
	}
	return err
}

// Observe reads iface's facts. A missing device is Present false with a nil
// error; a device that is not VXLAN is Present false with an error; a failed
// read returns the zero Link and the error.
func Observe(h *netlinkx.Handle, iface string) (state.Link, error) {
	link, err := h.LinkByName(iface)
	switch {
	case netlinkx.IsNotFound(err):
		return state.Link{Name: iface}, nil
	case err != nil:
		return state.Link{}, fmt.Errorf("observe %s: %w", iface, err)
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		return state.Link{Name: iface}, fmt.Errorf("observe %s: a %s device, not vxlan", iface, link.Type())
	}
	a := vx.Attrs()
	return state.Link{
		Name:    iface,
		Present: true,
		Up:      a.Flags&net.FlagUp != 0,
		Index:   a.Index,
		MAC:     slices.Clone(a.HardwareAddr),
		Local:   netlinkx.Addr(vx.SrcAddr),
		MTU:     a.MTU,
		VNI:     vx.VxlanId,
	}, nil
}

// Describe renders link facts for logs.
func Describe(l state.Link) string {
	if !l.Present {
		return l.Name + " absent"
	}
	up := "down"
	if l.Up {
		up = "up"
	}
	return fmt.Sprintf("%s %s index %d mac %s local %s mtu %d vni %d", l.Name, up, l.Index, l.MAC, l.Local, l.MTU, l.VNI)
}

func sameLink(a, b state.Link) bool {
	return a.Name == b.Name && a.Present == b.Present && a.Up == b.Up && a.Index == b.Index &&
		a.MAC.String() == b.MAC.String() && a.Local == b.Local && a.MTU == b.MTU && a.VNI == b.VNI
}
