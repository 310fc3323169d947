package app

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

func TestWarnsWhenFlanneldPublishesAnotherPublicIP(t *testing.T) {
	var buf bytes.Buffer
	a := &App{log: slog.New(slog.NewJSONHandler(&buf, nil)), store: state.New(), mismatch: map[string]bool{}}
	mac := net.HardwareAddr{0x02, 0x42, 0xc6, 0x33, 0x64, 0x0b}
	a.store.SetLink(state.Link{Name: "flannel.1", Present: true, MAC: mac, Local: netip.MustParseAddr("198.51.100.11")}, "test")
	a.store.Subscribe(a.checkOwnLease)
	lease := func(subnet, ip string, m net.HardwareAddr) state.Lease {
		return state.Lease{Subnet: netip.MustParsePrefix(subnet), Raw: flannel.NewVXLAN(netip.MustParseAddr(ip), 1, m),
			PublicIP: netip.MustParseAddr(ip), VNI: 1, VtepMAC: m}
	}
	// A peer's lease and our own lease with our address: no warning.
	a.store.PutLease(lease("198.18.2.0/24", "198.51.100.12", net.HardwareAddr{2, 0, 0, 0, 0, 2}), "etcd")
	a.store.PutLease(lease("198.18.1.0/24", "198.51.100.11", mac), "etcd")
	if buf.Len() != 0 {
		t.Fatalf("unexpected warning: %s", buf.String())
	}
	// flanneld re-published our VTEP under a NAT address: one warning, not one per event.
	a.store.PutLease(lease("198.18.1.0/24", "203.0.113.7", mac), "etcd")
	a.store.PutLease(lease("198.18.3.0/24", "203.0.113.7", mac), "etcd")
	if n := strings.Count(buf.String(), "set FLANNELD_PUBLIC_IP"); n != 1 {
		t.Fatalf("want one warning, got %d: %s", n, buf.String())
	}
	// With the override set to flanneld's address, no warning.
	buf.Reset()
	a.cfg = config.Config{PublicIP: netip.MustParseAddr("203.0.113.7")}
	a.store.PutLease(lease("198.18.4.0/24", "203.0.113.7", mac), "etcd")
	if buf.Len() != 0 {
		t.Fatalf("warned despite FLANNELD_PUBLIC_IP: %s", buf.String())
	}
}
