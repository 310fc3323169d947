// Package hostprep is `flannel-registrar prepare`, the original tool's
// flannel-boot job done once and idempotently at boot, before Docker starts:
// IPv4 forwarding on, and reverse-path filtering loose for flannel's VXLAN
// device. It changes a value only when it is wrong, and reports every value
// it looked at, changed or not.
//
// rp_filter: the kernel uses max(conf/all, conf/<dev>) for a device (0 off,
// 1 strict, 2 loose). Only strict drops packets whose source is routed
// through another device (traffic from a peer behind HOST_GATEWAY_MAP, or
// arriving before its route is programmed), so the goal is "effective value
// not 1"; setting the device to 2 reaches it whatever conf/all is, so
// conf/all is never touched (it would loosen every interface). When the
// device does not exist yet (flanneld creates it, often after this runs),
// conf/default is made loose instead, which the new device inherits.
//
// Sysctls under net/ are per network namespace: the values are those of the
// namespace of the calling thread.
package hostprep

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Options say where to look.
type Options struct {
	Root  string // sysctl root; default /proc/sys
	Iface string // the VXLAN device, e.g. flannel.1
}

// Change is one sysctl looked at.
type Change struct {
	Key      string // dotted name, net.ipv4.ip_forward
	Old, New string
	Note     string // why (for the rp_filter choices)
}

// Changed says whether Prepare wrote the value.
func (c Change) Changed() bool { return c.Old != c.New }

func (c Change) String() string {
	s := c.Key + " " + c.Old
	if c.Changed() {
		s += " -> " + c.New
	} else {
		s += " (unchanged)"
	}
	if c.Note != "" {
		s += ": " + c.Note
	}
	return s
}

// Prepare sets net.ipv4.ip_forward=1 and a loose rp_filter for the device,
// and returns every value it checked.
func Prepare(o Options) ([]Change, error) {
	if o.Root == "" {
		o.Root = "/proc/sys"
	}
	if o.Iface == "" || strings.ContainsAny(o.Iface, "/") || o.Iface == "." || o.Iface == ".." {
		return nil, fmt.Errorf("VXLAN device name %q: expected an interface name", o.Iface)
	}
	s := sysctl{root: o.Root}
	var out []Change
	fwd, err := s.ensure("net.ipv4.ip_forward", func(v int) (int, bool) { return 1, v != 1 })
	if err != nil {
		return out, err
	}
	fwd.Note = "containers' traffic is routed between the bridges and " + o.Iface
	out = append(out, fwd)

	all, err := s.read("net.ipv4.conf.all.rp_filter")
	if err != nil {
		return out, err
	}
	target, note := "net.ipv4.conf."+o.Iface+".rp_filter", "effective value max(all="+strconv.Itoa(all)+", device) must not be 1 (strict)"
	if _, err := os.Stat(filepath.Join(o.Root, "net/ipv4/conf", o.Iface)); errors.Is(err, os.ErrNotExist) {
		target = "net.ipv4.conf.default.rp_filter"
		note = o.Iface + " does not exist yet; the device flanneld creates inherits conf.default, " + note
	} else if err != nil {
		return out, fmt.Errorf("stat %s: %w", o.Iface, err)
	}
	rp, err := s.ensure(target, func(v int) (int, bool) { return 2, max(all, v) == 1 })
	if err != nil {
		return out, err
	}
	rp.Note = note
	return append(out, rp), nil
}

type sysctl struct{ root string }

// path maps a dotted name to its file; device names keep their dots
// (net.ipv4.conf.flannel.1.rp_filter -> net/ipv4/conf/flannel.1/rp_filter).
func (s sysctl) path(key string) string {
	if dev, ok := strings.CutPrefix(key, "net.ipv4.conf."); ok {
		i := strings.LastIndexByte(dev, '.')
		return filepath.Join(s.root, "net/ipv4/conf", dev[:i], dev[i+1:])
	}
	return filepath.Join(s.root, strings.ReplaceAll(key, ".", "/"))
}

func (s sysctl) read(key string) (int, error) {
	b, err := os.ReadFile(s.path(key))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	return v, nil
}

// ensure reads key and, when want says so, writes the wanted value.
func (s sysctl) ensure(key string, want func(int) (int, bool)) (Change, error) {
	v, err := s.read(key)
	if err != nil {
		return Change{}, err
	}
	c := Change{Key: key, Old: strconv.Itoa(v), New: strconv.Itoa(v)}
	nv, write := want(v)
	if !write {
		return c, nil
	}
	if err := os.WriteFile(s.path(key), []byte(strconv.Itoa(nv)+"\n"), 0o644); err != nil {
		return c, fmt.Errorf("set %s=%d: %w", key, nv, err)
	}
	c.New = strconv.Itoa(nv)
	return c, nil
}
