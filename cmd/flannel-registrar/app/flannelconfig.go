package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// flannelConfig is the part of flanneld's <FLANNEL_PREFIX>/config we use.
type flannelConfig struct {
	Network string `json:"Network"`
}

// followFlannelConfig reads flannel's Network now and every INTERVAL into
// the store: the policy allows it by default (ALLOWED_SUBNETS unset).
func (a *App) followFlannelConfig(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		if err := a.readFlannelConfig(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("flannel config not read", "key", a.cfg.FlannelPrefix+"/config", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *App) readFlannelConfig(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
	defer cancel()
	key := a.cfg.FlannelPrefix + "/config"
	resp, err := a.etcd.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("%s is absent", key)
	}
	var fc flannelConfig
	if err := json.Unmarshal(resp.Kvs[0].Value, &fc); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	p, err := netip.ParsePrefix(fc.Network)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("%s: Network %q is not an IPv4 CIDR", key, fc.Network)
	}
	if old := a.store.FlannelNetwork(); old != p.Masked() {
		a.log.Info("flannel network read", "network", p.Masked().String(), "key", key)
	}
	a.store.SetFlannelNetwork(p.Masked(), "etcd:"+key)
	return nil
}
