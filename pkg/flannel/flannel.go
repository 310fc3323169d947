// Package flannel encodes and decodes flannel's etcd layout: subnet lease keys
// ("10.5.35.0-24") and lease values, exactly as flanneld writes and reads them.
//
// Every value this project writes under <FLANNEL_PREFIX>/subnets goes through
// Encode, because an unparsable lease there makes flanneld (<= v0.28.9) drop
// all of its routes.
package flannel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/flannel-registrar/flannel-registrar/pkg/names"
	"github.com/flannel-registrar/flannel-registrar/pkg/strictjson"
)

// BackendVXLAN is the backend type of leases that flannel routes.
const BackendVXLAN = "vxlan"

// BackendReservation is the backend type of our reservations. flanneld
// ignores leases of unknown backend types for routing but its allocator still
// avoids their ranges.
const BackendReservation = "flannel-registrar"

// Lease is flannel's lease value, field for field in flannel's order, so that
// encoding a decoded lease reproduces flannel's bytes.
type Lease struct {
	PublicIP    string          `json:"PublicIP"`
	PublicIPv6  *string         `json:"PublicIPv6"`
	BackendType string          `json:"BackendType"`
	BackendData json.RawMessage `json:"BackendData,omitempty"`
}

// VXLANData is the BackendData of a vxlan lease.
type VXLANData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// ReservationData is the BackendData of one of our reservations.
type ReservationData struct {
	Host    string `json:"Host"`
	Network string `json:"Network"`
}

// SubnetKey is the last element of a lease key: "10.5.35.0/24" -> "10.5.35.0-24".
func SubnetKey(p netip.Prefix) string {
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseSubnetKey is the inverse of SubnetKey. It accepts only canonical IPv4
// prefixes (network address, no host bits), as flannel writes them.
func ParseSubnetKey(s string) (netip.Prefix, error) {
	ip, bits, ok := strings.Cut(s, "-")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: expected <ipv4>-<prefix length>", s)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not an IPv4 address", s, ip)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > 32 || strconv.Itoa(n) != bits {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not a prefix length 0-32", s, bits)
	}
	p := netip.PrefixFrom(addr, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: host bits set (network is %s)", s, p.Masked())
	}
	return p, nil
}

// MaxValueSize caps a lease value (flanneld's are about 130 bytes): a bigger
// one is refused unread.
const MaxValueSize = 4096

// Decode parses a lease value. It rejects values flanneld could not use:
// unknown JSON shape, a missing backend type, or a PublicIP that is not IPv4;
// and ambiguous or oversized ones: more than MaxValueSize bytes, duplicate
// keys, or keys that differ from a field name only in case (encoding/json,
// flanneld's decoder, would silently pick one; see pkg/strictjson).
func Decode(b []byte) (Lease, error) {
	if err := strictjson.CheckSize("lease value", b, MaxValueSize); err != nil {
		return Lease{}, fmt.Errorf("decode lease: %w", err)
	}
	// json.Unmarshal underneath, as flanneld uses: it rejects any trailing
	// data (a json.Decoder with More() let "{...}]" through).
	var l Lease
	if err := strictjson.Unmarshal(b, &l); err != nil {
		return Lease{}, fmt.Errorf("decode lease: %w", err)
	}
	if l.BackendType == "" {
		return Lease{}, errors.New("decode lease: empty BackendType")
	}
	if a, err := netip.ParseAddr(l.PublicIP); err != nil || !a.Is4() {
		return Lease{}, fmt.Errorf("decode lease: PublicIP %q is not an IPv4 address", l.PublicIP)
	}
	return l, nil
}

// Encode renders a lease as flanneld writes it.
func Encode(l Lease) ([]byte, error) {
	if l.BackendType == "" {
		return nil, errors.New("encode lease: empty BackendType")
	}
	if a, err := netip.ParseAddr(l.PublicIP); err != nil || !a.Is4() {
		return nil, fmt.Errorf("encode lease: PublicIP %q is not an IPv4 address", l.PublicIP)
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encode lease: %w", err)
	}
	return b, nil
}

// VXLAN returns the vxlan backend data of l, validated: a unicast MAC and a VNI
// in the 24-bit range.
func (l Lease) VXLAN() (VXLANData, net.HardwareAddr, error) {
	if l.BackendType != BackendVXLAN {
		return VXLANData{}, nil, fmt.Errorf("backend %q is not %q", l.BackendType, BackendVXLAN)
	}
	var d VXLANData
	if err := strictjson.Unmarshal(l.BackendData, &d); err != nil {
		return VXLANData{}, nil, fmt.Errorf("vxlan backend data: %w", err)
	}
	mac, err := ParseVtepMAC(d.VtepMAC)
	if err != nil {
		return VXLANData{}, nil, err
	}
	if d.VNI < 0 || d.VNI > 1<<24-1 {
		return VXLANData{}, nil, fmt.Errorf("vxlan backend data: VNI %d out of range 0-16777215", d.VNI)
	}
	return d, mac, nil
}

// Reservation returns the backend data of one of our reservations.
func (l Lease) Reservation() (ReservationData, error) {
	if l.BackendType != BackendReservation {
		return ReservationData{}, fmt.Errorf("backend %q is not %q", l.BackendType, BackendReservation)
	}
	var d ReservationData
	if err := strictjson.Unmarshal(l.BackendData, &d); err != nil {
		return ReservationData{}, fmt.Errorf("reservation backend data: %w", err)
	}
	if d.Host == "" || d.Network == "" {
		return ReservationData{}, errors.New("reservation backend data: empty Host or Network")
	}
	if err := names.CheckHost(d.Host); err != nil {
		return ReservationData{}, fmt.Errorf("reservation backend data: Host %q: %w", d.Host, err)
	}
	if err := names.CheckNetwork(d.Network); err != nil {
		return ReservationData{}, fmt.Errorf("reservation backend data: Network %q: %w", d.Network, err)
	}
	return d, nil
}

// NewReservation builds the lease value that reserves a subnet for a Docker
// network of host: PublicIP 0.0.0.0 so that no flanneld routes it or adopts it.
func NewReservation(host, network string) Lease {
	data, _ := json.Marshal(ReservationData{Host: host, Network: network}) // cannot fail: two strings
	return Lease{PublicIP: "0.0.0.0", BackendType: BackendReservation, BackendData: data}
}

// NewVXLAN builds a vxlan lease value as flanneld writes it.
func NewVXLAN(publicIP netip.Addr, vni int, mac net.HardwareAddr) Lease {
	data, _ := json.Marshal(VXLANData{VNI: vni, VtepMAC: mac.String()}) // cannot fail
	return Lease{PublicIP: publicIP.String(), BackendType: BackendVXLAN, BackendData: data}
}

// ParseVtepMAC parses a VTEP MAC and rejects what cannot be a VTEP: not 6
// bytes, all-zero, or multicast.
func ParseVtepMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("VtepMAC %q is not a 6-byte MAC address", s)
	}
	if mac[0]&1 == 1 || bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		return nil, fmt.Errorf("VtepMAC %q is not a unicast MAC address", s)
	}
	return mac, nil
}

// Config is the part of flannel's network config (<FLANNEL_PREFIX>/config) we read.
type Config struct {
	Network   string `json:"Network"`
	SubnetLen int    `json:"SubnetLen,omitempty"`
	Backend   struct {
		Type string `json:"Type"`
		VNI  int    `json:"VNI,omitempty"`
	} `json:"Backend"`
}
