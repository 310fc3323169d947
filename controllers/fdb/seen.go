package fdb

// This file: what the controller saw on the device and what it owns.

import (
	"net"
	"net/netip"
	"slices"
)

// macKey is a 6-byte MAC address as a map key: seen and byMAC hold one
// entry per remote VTEP, and a key of its string form cost a 17-byte
// string per entry besides a wider map slot.
type macKey [6]byte

// keyOf returns mac's key; ok false when it is not 6 bytes (never one of
// ours: flannel's VTEP MACs are, and Reconcile refuses other keys).
func keyOf(mac net.HardwareAddr) (macKey, bool) {
	var k macKey
	if len(mac) != len(k) {
		return k, false
	}
	copy(k[:], mac)
	return k, true
}

// parseKey is keyOf of a MAC's string form.
func parseKey(s string) (macKey, bool) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return macKey{}, false
	}
	return keyOf(mac)
}

func (k macKey) String() string { return net.HardwareAddr(k[:]).String() }

func (c *Controller) remember(mac net.HardwareAddr, ip netip.Addr) {
	k, ok := keyOf(mac)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.seen[ip]; ok && old != k {
		c.dropLocked(old, ip)
	}
	c.seen[ip] = k
	if !slices.Contains(c.byMAC[k], ip) {
		c.byMAC[k] = append(c.byMAC[k], ip)
	}
}

func (c *Controller) forget(mac string, ip netip.Addr) {
	k, ok := parseKey(mac)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.seen[ip]; ok && old == k {
		delete(c.seen, ip)
	}
	c.dropLocked(k, ip)
}

func (c *Controller) dropLocked(mac macKey, ip netip.Addr) {
	ips := c.byMAC[mac]
	i := slices.Index(ips, ip)
	switch {
	case i < 0:
	case len(ips) == 1:
		delete(c.byMAC, mac)
	default:
		c.byMAC[mac] = slices.Delete(ips, i, i+1)
	}
}

func (c *Controller) ownsFDB(mac string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ownFDB[mac]
	return ok
}

func (c *Controller) ownsNeigh(ip netip.Addr, mac string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ownNeigh[neighEntry{ip, mac}]
	return ok
}

// disownFDB and disownNeigh drop an entry found gone or swept; a record
// that wants it again marks it anew (desired).
func (c *Controller) disownFDB(mac string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ownFDB, mac)
}

func (c *Controller) disownNeigh(ip netip.Addr, mac string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ownNeigh, neighEntry{ip, mac})
}

func (c *Controller) candidates(mac string) []netip.Addr {
	k, ok := parseKey(mac)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.byMAC[k])
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (c *Controller) seenWith(ip netip.Addr) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if mac, ok := c.seen[ip]; ok {
		return []string{mac.String()}
	}
	return nil
}
