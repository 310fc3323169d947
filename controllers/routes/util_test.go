package routes_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/flannel-registrar/flannel-registrar/pkg/reconcile"
	"github.com/flannel-registrar/flannel-registrar/pkg/registry"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func withRecorder() (context.Context, *reconcile.Recorder) {
	return reconcile.WithRecorder(context.Background())
}

func netRecord(n byte, network, subnet string, vtep net.HardwareAddr) registry.Network {
	return registry.Network{Host: fmt.Sprintf("h%d", n), Network: network, Subnet: netip.MustParsePrefix(subnet),
		PublicIP: peerIP(n), VtepMAC: vtep, VNI: 1}
}
