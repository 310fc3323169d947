package fdb

// This file: what the controller saw on the device and what it owns.

import (
	"net/netip"
	"slices"
)

func (c *Controller) remember(mac string, ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.seen[ip]; ok && old != mac {
		c.dropLocked(old, ip)
	}
	c.seen[ip] = mac
	if !slices.Contains(c.byMAC[mac], ip) {
		c.byMAC[mac] = append(c.byMAC[mac], ip)
	}
}

func (c *Controller) forget(mac string, ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[ip] == mac {
		delete(c.seen, ip)
	}
	c.dropLocked(mac, ip)
}

func (c *Controller) dropLocked(mac string, ip netip.Addr) {
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
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.byMAC[mac])
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (c *Controller) seenWith(ip netip.Addr) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if mac, ok := c.seen[ip]; ok {
		return []string{mac}
	}
	return nil
}
