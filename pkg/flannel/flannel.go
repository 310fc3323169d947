// Package flannel encodes and decodes flannel's etcd layout: subnet lease keys
// ("10.5.35.0-24", dual-stack "10.5.35.0-24&fd00::-64") and lease values,
// exactly as flanneld writes and reads them.
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

// DualStackKey is the lease key flanneld writes in dual-stack mode:
// ("10.5.35.0/24", "fd00::/64") -> "10.5.35.0-24&fd00::-64". An invalid p6
// gives SubnetKey(p4).
func DualStackKey(p4, p6 netip.Prefix) string {
	if !p6.IsValid() {
		return SubnetKey(p4)
	}
	return SubnetKey(p4) + "&" + p6.Addr().String() + "-" + strconv.Itoa(p6.Bits())
}

// ErrIPv6Only marks the key of an IPv6-only lease ("0.0.0.0-0&fd00::-64"):
// it claims no IPv4 subnet.
var ErrIPv6Only = errors.New("IPv6-only lease: no IPv4 subnet")

// ParseSubnetKey parses a lease key and returns its IPv4 subnet: the inverse
// of SubnetKey, and of DualStackKey for flanneld's dual-stack keys
// ("10.5.35.0-24&fd00::-64"). See ParseSubnetKeys.
func ParseSubnetKey(s string) (netip.Prefix, error) {
	p4, _, err := ParseSubnetKeys(s)
	return p4, err
}

// ParseSubnetKeys parses a lease key into its IPv4 subnet and, for a
// dual-stack key, its IPv6 subnet (invalid otherwise). It accepts only
// canonical prefixes (network address, no host bits, no leading zeros,
// RFC 5952 IPv6 text), as flanneld writes them, so that
// DualStackKey(p4, p6) == s. An IPv6-only key (IPv4 part 0.0.0.0-0) is
// ErrIPv6Only.
func ParseSubnetKeys(s string) (p4, p6 netip.Prefix, err error) {
	v4, v6, dual := strings.Cut(s, "&")
	if p4, err = parseKeyPart(s, v4, false); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	if !dual {
		return p4, netip.Prefix{}, nil
	}
	if p6, err = parseKeyPart(s, v6, true); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	if p4.Bits() == 0 {
		return netip.Prefix{}, p6, fmt.Errorf("subnet key %q: %w", s, ErrIPv6Only)
	}
	return p4, p6, nil
}

// parseKeyPart parses "<address>-<length>" of one family.
func parseKeyPart(key, part string, v6 bool) (netip.Prefix, error) {
	family, maxBits := "IPv4", 32
	if v6 {
		family, maxBits = "IPv6", 128
	}
	ip, bits, ok := strings.Cut(part, "-")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: expected <ipv4>-<prefix length>[&<ipv6>-<prefix length>]", key)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Is6() != v6 || addr.Is4In6() || addr.Zone() != "" || addr.String() != ip {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not a canonical %s address", key, ip, family)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > maxBits || strconv.Itoa(n) != bits {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not a prefix length 0-%d", key, bits, maxBits)
	}
	p := netip.PrefixFrom(addr, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: host bits set (network is %s)", key, p.Masked())
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
