package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/flannel-registrar/flannel-registrar/hack/lab"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

// keys is the lab's etcd layout (the registrar's defaults).
var keys = registry.Keys{FlannelPrefix: lab.FlannelPrefix, ConfigPrefix: "/flannel/network/subnets"}

// wantNet is a Docker network that should be registered: a record of its
// host and a reservation in flannel's registry.
type wantNet struct {
	Host   string // h1, ...
	Name   string
	Subnet netip.Prefix
}

// hostFacts is what a record of a host must carry.
type hostFacts struct {
	PublicIP string
	VtepMAC  string // flannel.1's MAC now
}

// diffRecords compares etcd (key -> value under our records prefix and
// under flannel's subnets) with the wanted networks. missing names every
// wanted network whose record or reservation is absent or wrong (another
// subnet, a stale PublicIP or VtepMAC, a reservation of another owner);
// extra every record or reservation of ours that no wanted network
// explains. settling networks (just created or removed) are neither.
func diffRecords(want []wantNet, settling []wantNet, records, subnets map[string]string, facts map[string]hostFacts) (missing, extra []string) {
	isSettling := func(host, name string) bool {
		return slices.ContainsFunc(settling, func(w wantNet) bool { return w.Host == host && w.Name == name })
	}
	wantKeys := map[string]bool{}
	wantSubnets := map[string]bool{}
	for _, w := range want {
		rk, sk := keys.Network(w.Host, w.Name), keys.Subnet(w.Subnet)
		wantKeys[rk], wantSubnets[sk] = true, true
		if isSettling(w.Host, w.Name) {
			continue
		}
		if msg := checkRecord(records[rk], w, facts[w.Host]); msg != "" {
			missing = append(missing, fmt.Sprintf("record %s: %s", rk, msg))
		}
		if msg := checkReservation(subnets[sk], w); msg != "" {
			missing = append(missing, fmt.Sprintf("reservation %s: %s", sk, msg))
		}
	}
	for k, v := range records {
		rest := strings.TrimPrefix(k, keys.Records())
		host, name, ok := strings.Cut(rest, "/")
		if !ok || strings.HasPrefix(host, "_") || wantKeys[k] || isSettling(host, name) {
			continue
		}
		extra = append(extra, fmt.Sprintf("record %s = %s", k, v))
	}
	for k, v := range subnets {
		var r reservation
		if json.Unmarshal([]byte(v), &r) != nil || r.BackendType != "flannel-registrar" || wantSubnets[k] {
			continue
		}
		if isSettling(r.BackendData.Host, r.BackendData.Network) {
			continue
		}
		extra = append(extra, fmt.Sprintf("reservation %s = %s", k, v))
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}

type reservation struct {
	PublicIP    string
	BackendType string
	BackendData struct{ Host, Network string }
}

func checkRecord(v string, w wantNet, f hostFacts) string {
	if v == "" {
		return "absent"
	}
	var r registry.NetworkRecord
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return fmt.Sprintf("unparsable %q", v)
	}
	switch {
	case r.Host != w.Host || r.Network != w.Name:
		return fmt.Sprintf("names %s/%s", r.Host, r.Network)
	case r.Subnet != w.Subnet.String():
		return fmt.Sprintf("subnet %s, want %s", r.Subnet, w.Subnet)
	case f.PublicIP != "" && r.PublicIP != f.PublicIP:
		return fmt.Sprintf("PublicIP %s, want %s", r.PublicIP, f.PublicIP)
	case f.VtepMAC != "" && !strings.EqualFold(r.VtepMAC, f.VtepMAC):
		return fmt.Sprintf("VtepMAC %s, flannel.1 has %s", r.VtepMAC, f.VtepMAC)
	}
	return ""
}

func checkReservation(v string, w wantNet) string {
	if v == "" {
		return "absent"
	}
	var r reservation
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return fmt.Sprintf("unparsable %q", v)
	}
	if r.BackendType != "flannel-registrar" || r.BackendData.Host != w.Host || r.BackendData.Network != w.Name {
		return fmt.Sprintf("held by %s", v)
	}
	return ""
}
