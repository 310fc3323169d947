package app

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// flannelConfig is the part of flanneld's <FLANNEL_PREFIX>/config we use.
type flannelConfig struct {
	Network string `json:"Network"`
}

// onFlannelConfig takes flannel's config from the etcd watcher (listed with
// both prefixes and watched on the same stream: no read of its own) into the
// store: the policy allows its Network by default (ALLOWED_SUBNETS unset).
// An absent or unusable config leaves the network read before.
func (a *App) onFlannelConfig(value []byte) {
	key := a.keys().FlannelConfig()
	p, err := decodeFlannelNetwork(key, value)
	if err != nil {
		a.log.Debug("flannel config not read", "key", key, "error", err.Error())
		return
	}
	if old := a.store.FlannelNetwork(); old != p {
		a.log.Info("flannel network read", "network", p.String(), "key", key)
	}
	a.store.SetFlannelNetwork(p, "etcd:"+key)
}

// decodeFlannelNetwork returns the IPv4 Network of flannel's config value
// (nil: the key is absent).
func decodeFlannelNetwork(key string, value []byte) (netip.Prefix, error) {
	if value == nil {
		return netip.Prefix{}, fmt.Errorf("%s is absent", key)
	}
	var fc flannelConfig
	if err := json.Unmarshal(value, &fc); err != nil {
		return netip.Prefix{}, fmt.Errorf("decode %s: %w", key, err)
	}
	p, err := netip.ParsePrefix(fc.Network)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s: Network %q is not an IPv4 CIDR", key, fc.Network)
	}
	return p.Masked(), nil
}
