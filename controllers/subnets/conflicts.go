package subnets

// This file: conflicts, refusals, duplicates and what is registered.

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

func (c *Controller) setConflict(name string, ce registry.ConflictError) {
	// Facts of one reconcile, not of the conflict.
	ce.Withdrawn, ce.WithdrawnSubnet = false, netip.Prefix{}
	c.mu.Lock()
	old, had := c.conflicts[name]
	c.conflicts[name] = ce
	delete(c.registered, name)
	delete(c.confirmed, name)
	c.mu.Unlock()
	if had && old == ce {
		return
	}
	if c.o.OnConflict != nil {
		c.o.OnConflict(ce)
	}
	c.pokeHost("conflict " + name)
}

func (c *Controller) clearConflict(name string) {
	c.mu.Lock()
	old, had := c.conflicts[name]
	delete(c.conflicts, name)
	c.mu.Unlock()
	if !had {
		return
	}
	if c.o.OnConflictCleared != nil {
		c.o.OnConflictCleared(old)
	}
	c.pokeHost("conflict cleared " + name)
}

// setRefused records (nil: clears) the policy's refusal of a local network
// and reports a change.
func (c *Controller) setRefused(name string, r *policy.Refusal) {
	c.mu.Lock()
	old, had := c.refused[name]
	if r != nil {
		c.refused[name] = *r
	} else {
		delete(c.refused, name)
	}
	c.mu.Unlock()
	changed := (r == nil && had) || (r != nil && (!had || old != *r))
	if changed && c.o.OnRefused != nil {
		c.o.OnRefused(name, r)
	}
	if changed {
		c.pokeHost("policy " + name)
	}
}

// Refused returns the local networks the policy refuses to publish.
func (c *Controller) Refused() map[string]policy.Refusal {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.refused)
}

// setRegistered records name as registered at p (invalid p: not registered).
func (c *Controller) setRegistered(name string, p netip.Prefix) {
	c.mu.Lock()
	_, had := c.registered[name]
	if p.IsValid() {
		c.registered[name] = p
	} else {
		delete(c.registered, name)
		delete(c.confirmed, name)
	}
	c.mu.Unlock()
	if had != p.IsValid() { // the count in the host record changed
		c.pokeHost("networks " + name)
	}
}

func (c *Controller) pokeHost(why string) {
	if c.o.Enqueuer != nil {
		c.o.Enqueuer.Enqueue(Name, HostKey, "subnets:"+why)
	}
}

// reportDuplicate reports another registrar using our host name, once per
// PublicIP.
func (c *Controller) reportDuplicate(d registry.DuplicateHost) {
	if d.IsZero() {
		return
	}
	c.mu.Lock()
	_, had := c.duplicates[d.PublicIP]
	if !had {
		c.duplicates[d.PublicIP] = d
	}
	c.mu.Unlock()
	if !had && c.o.OnDuplicateHost != nil {
		c.o.OnDuplicateHost(d)
	}
}

// Duplicates returns the other registrars seen using this host's name,
// sorted by PublicIP.
func (c *Controller) Duplicates() []registry.DuplicateHost {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedBy(c.duplicates, func(d registry.DuplicateHost) string { return d.PublicIP })
}

// Conflicts returns the current conflicts, sorted by network name.
func (c *Controller) Conflicts() []registry.ConflictError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedBy(c.conflicts, func(ce registry.ConflictError) string { return ce.Network })
}

// sortedBy returns m's values sorted by key(v).
func sortedBy[V any](m map[string]V, key func(V) string) []V {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b V) int { return strings.Compare(key(a), key(b)) })
	return out
}

// ConflictCount returns how many networks are in conflict now.
func (c *Controller) ConflictCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conflicts)
}

// Registered returns the networks registered by this process, by name.
func (c *Controller) Registered() map[string]netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.registered)
}
