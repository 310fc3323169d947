// Package registry is flannel-registrar's etcd schema: network records, host
// records and flannel reservations, their keys, codecs and the transactions
// that write them (create if absent, update only our own, otherwise conflict).
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
	"github.com/flannel-registrar/flannel-registrar/pkg/names"
	"github.com/flannel-registrar/flannel-registrar/pkg/strictjson"
)

// HostsDir is the directory under the config prefix that holds host records.
// Host names cannot start with "_", so it never collides with a host.
const HostsDir = "_hosts"

// RegistrarsDir holds liveness markers: <ConfigPrefix>/_registrars/<host>/<PublicIP>,
// written on its host liveness lease by a registrar that does not hold the
// host record of its name, so that another registrar of that name (cloned
// VMs) can tell it is alive.
const RegistrarsDir = "_registrars"

// QuarantineDir holds copies of values we removed but did not write.
const QuarantineDir = "_quarantine"

// Size caps of what is read from etcd (documented in the README). Our keys
// are at most a prefix, a 253-byte host name and a network name; our values
// a few hundred bytes. Anything bigger is refused unread.
const (
	MaxKeySize   = 512
	MaxValueSize = flannel.MaxValueSize // 4096
)

// Keys builds and parses the etcd keys of one deployment.
type Keys struct {
	FlannelPrefix string // e.g. /coreos.com/network
	ConfigPrefix  string // e.g. /flannel/network/subnets
}

// Network is the key of a network record: <ConfigPrefix>/<host>/<network>.
func (k Keys) Network(host, network string) string {
	return k.ConfigPrefix + "/" + host + "/" + network
}

// HostNetworks is the prefix of every network record of host.
func (k Keys) HostNetworks(host string) string { return k.ConfigPrefix + "/" + host + "/" }

// Host is the key of a host record.
func (k Keys) Host(host string) string { return k.ConfigPrefix + "/" + HostsDir + "/" + host }

// Registrars is the prefix of the liveness markers of host.
func (k Keys) Registrars(host string) string {
	return k.ConfigPrefix + "/" + RegistrarsDir + "/" + host + "/"
}

// Registrar is the key of the liveness marker of host's registrar with
// PublicIP ip.
func (k Keys) Registrar(host string, ip netip.Addr) string { return k.Registrars(host) + ip.String() }

// Records is the prefix under which all our records live.
func (k Keys) Records() string { return k.ConfigPrefix + "/" }

// Subnets is the prefix of flannel's leases.
func (k Keys) Subnets() string { return k.FlannelPrefix + "/subnets/" }

// Subnet is the key of flannel's lease (or our reservation) for p.
func (k Keys) Subnet(p netip.Prefix) string { return k.Subnets() + flannel.SubnetKey(p) }

// FlannelConfig is the key of flannel's network config.
func (k Keys) FlannelConfig() string { return k.FlannelPrefix + "/config" }

// KeyKind says what a key under one of our prefixes is.
type KeyKind int

// Kinds of keys.
const (
	KindUnknown KeyKind = iota
	KindNetwork
	KindHost
	KindSubnet
)

// ParsedKey is a key split into its parts.
type ParsedKey struct {
	Kind    KeyKind
	Host    string       // KindNetwork, KindHost
	Network string       // KindNetwork
	Subnet  netip.Prefix // KindSubnet: the IPv4 subnet
	Subnet6 netip.Prefix // KindSubnet of a dual-stack lease key: its IPv6 subnet
}

// Parse classifies key. Keys of other shapes (quarantine, garbage) are KindUnknown
// with an error saying why, and so are keys over MaxKeySize and keys whose
// host or network segment breaks the naming rules (pkg/names).
func (k Keys) Parse(key string) (ParsedKey, error) {
	if len(key) > MaxKeySize {
		return ParsedKey{}, fmt.Errorf("key %.64q... is %d bytes, over the size cap of %d bytes", key, len(key), MaxKeySize)
	}
	if rest, ok := strings.CutPrefix(key, k.Subnets()); ok {
		p, p6, err := flannel.ParseSubnetKeys(rest)
		if err != nil {
			return ParsedKey{}, err
		}
		return ParsedKey{Kind: KindSubnet, Subnet: p, Subnet6: p6}, nil
	}
	rest, ok := strings.CutPrefix(key, k.Records())
	if !ok {
		return ParsedKey{}, fmt.Errorf("key %q is outside %s and %s", key, k.Records(), k.Subnets())
	}
	if strings.HasPrefix(rest, RegistrarsDir+"/") {
		return ParsedKey{}, fmt.Errorf("key %q is a registrar liveness marker", key)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return ParsedKey{}, fmt.Errorf("key %q: expected %s<host>/<network>", key, k.Records())
	}
	switch parts[0] {
	case HostsDir:
		if err := names.CheckHost(parts[1]); err != nil {
			return ParsedKey{}, fmt.Errorf("key %q: host name %q: %w", key, parts[1], err)
		}
		return ParsedKey{Kind: KindHost, Host: parts[1]}, nil
	case QuarantineDir:
		return ParsedKey{}, fmt.Errorf("key %q is a quarantined copy", key)
	}
	if strings.HasPrefix(parts[0], "_") {
		return ParsedKey{}, fmt.Errorf("key %q: reserved directory %q", key, parts[0])
	}
	if err := names.CheckHost(parts[0]); err != nil {
		return ParsedKey{}, fmt.Errorf("key %q: host name %q: %w", key, parts[0], err)
	}
	if err := names.CheckNetwork(parts[1]); err != nil {
		return ParsedKey{}, fmt.Errorf("key %q: network name %q: %w", key, parts[1], err)
	}
	return ParsedKey{Kind: KindNetwork, Host: parts[0], Network: parts[1]}, nil
}

// NetworkRecord is the value of a network record (JSON; unknown fields are
// allowed so that newer versions can add some).
type NetworkRecord struct {
	Host      string `json:"Host"`
	Network   string `json:"Network"`
	NetworkID string `json:"NetworkID"`
	Subnet    string `json:"Subnet"`
	Gateway   string `json:"Gateway"`
	PublicIP  string `json:"PublicIP"`
	VtepMAC   string `json:"VtepMAC"`
	VNI       int    `json:"VNI"`
	// Groups are the network's isolation groups (label GroupLabel); omitted
	// when empty, so records of ungrouped networks are as before, and older
	// registrars ignore the field.
	Groups []string `json:"Groups,omitempty"`
}

// Network is a validated network record.
type Network struct {
	Host, Network, NetworkID string
	Subnet                   netip.Prefix
	Gateway                  netip.Addr // may be invalid (zero) when Docker gave none
	PublicIP                 netip.Addr
	VtepMAC                  net.HardwareAddr
	VNI                      int
	Groups                   []string // sorted, unique, valid (ValidGroup); nil: ungrouped
}

// Record renders n as stored.
func (n Network) Record() NetworkRecord {
	r := NetworkRecord{
		Host: n.Host, Network: n.Network, NetworkID: n.NetworkID,
		Subnet: n.Subnet.String(), PublicIP: n.PublicIP.String(),
		VtepMAC: n.VtepMAC.String(), VNI: n.VNI, Groups: n.Groups,
	}
	if n.Gateway.IsValid() {
		r.Gateway = n.Gateway.String()
	}
	return r
}

// EncodeNetwork validates n and renders its value.
func EncodeNetwork(n Network) ([]byte, error) {
	if _, err := n.Record().Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(n.Record())
}

// DecodeNetwork parses and validates a network record value. It refuses
// values over MaxValueSize and ambiguous JSON (duplicate keys, keys that
// differ from a field name only in case: see pkg/strictjson).
func DecodeNetwork(b []byte) (Network, error) {
	if err := strictjson.CheckSize("network record", b, MaxValueSize); err != nil {
		return Network{}, fmt.Errorf("decode network record: %w", err)
	}
	var r NetworkRecord
	if err := strictjson.Unmarshal(b, &r); err != nil {
		return Network{}, fmt.Errorf("decode network record: %w", err)
	}
	return r.Validate()
}

// Validate checks every field a peer needs to route the network: a host name
// as HOST_NAME's rule, a network name as Docker's, an IPv4 network prefix, a usable PublicIP (not unspecified, loopback or multicast)
// and a unicast VTEP MAC.
func (r NetworkRecord) Validate() (Network, error) {
	var errs []error
	n := Network{Host: r.Host, Network: r.Network, NetworkID: r.NetworkID, VNI: r.VNI}
	if err := names.CheckHost(r.Host); err != nil {
		errs = append(errs, fmt.Errorf("Host %q: %w", r.Host, err))
	}
	if err := names.CheckNetwork(r.Network); err != nil {
		errs = append(errs, fmt.Errorf("Network %q: %w", r.Network, err))
	}
	p, err := netip.ParsePrefix(r.Subnet)
	switch {
	case err != nil || !p.Addr().Is4():
		errs = append(errs, fmt.Errorf("Subnet %q is not an IPv4 CIDR", r.Subnet))
	case p.Masked() != p:
		errs = append(errs, fmt.Errorf("Subnet %q has host bits set", r.Subnet))
	default:
		n.Subnet = p
	}
	if r.Gateway != "" {
		if g, err := netip.ParseAddr(r.Gateway); err != nil || !g.Is4() {
			errs = append(errs, fmt.Errorf("Gateway %q is not an IPv4 address", r.Gateway))
		} else {
			n.Gateway = g
		}
	}
	ip, err := ValidPublicIP(r.PublicIP)
	if err != nil {
		errs = append(errs, err)
	}
	n.PublicIP = ip
	mac, err := flannel.ParseVtepMAC(r.VtepMAC)
	if err != nil {
		errs = append(errs, err)
	}
	n.VtepMAC = mac
	if r.VNI < 0 || r.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("VNI %d out of range 0-16777215", r.VNI))
	}
	if len(r.Groups) > 0 {
		g, err := NormalizeGroups(r.Groups)
		if err != nil {
			errs = append(errs, fmt.Errorf("Groups: %w", err))
		}
		n.Groups = g
	}
	if err := errors.Join(errs...); err != nil {
		return Network{}, fmt.Errorf("invalid network record: %w", err)
	}
	return n, nil
}

// GroupLabel is the Docker network label naming a network's isolation
// groups: "flannel-registrar.group=NAME[,NAME…]".
const GroupLabel = "flannel-registrar.group"

// MaxGroupName is the longest group name.
const MaxGroupName = 63

// ValidGroup checks one group name: letters, digits, '-', '_', '.', 1 to
// MaxGroupName characters.
func ValidGroup(name string) error {
	if name == "" || len(name) > MaxGroupName {
		return fmt.Errorf("group name %q: want 1 to %d characters", name, MaxGroupName)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("group name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// ParseGroups reads the value of GroupLabel: comma-separated names (spaces
// around them ignored). The result is sorted and unique; an empty value or
// any bad name is an error.
func ParseGroups(label string) ([]string, error) {
	var names []string
	for _, f := range strings.Split(label, ",") {
		names = append(names, strings.TrimSpace(f))
	}
	g, err := NormalizeGroups(names)
	if err != nil {
		return nil, fmt.Errorf("label %s=%q: %w", GroupLabel, label, err)
	}
	return g, nil
}

// NormalizeGroups validates names and returns them sorted and unique (nil
// for none).
func NormalizeGroups(names []string) ([]string, error) {
	var errs []error
	var out []string
	for _, n := range names {
		if err := ValidGroup(n); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, n)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ValidPublicIP parses a peer's PublicIP and refuses addresses that cannot be
// a VXLAN endpoint (empty, unspecified, loopback, multicast, IPv6).
func ValidPublicIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("PublicIP %q is not an IPv4 address", s)
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("PublicIP %q cannot be a VXLAN endpoint", s)
	}
	return a, nil
}

// HostRecord is the value of a host record: what a peer and an operator need
// to know about a running registrar.
type HostRecord struct {
	Host      string    `json:"Host"`
	PublicIP  string    `json:"PublicIP"`
	VtepMAC   string    `json:"VtepMAC"`
	VNI       int       `json:"VNI"`
	Version   string    `json:"Version"`
	StartTime time.Time `json:"StartTime"`
	Networks  int       `json:"Networks"`
	Conflicts int       `json:"Conflicts"`
}

// DecodeHost parses a host record: at most MaxValueSize bytes, strict JSON,
// and a Host as HOST_NAME's rule.
func DecodeHost(b []byte) (HostRecord, error) {
	if err := strictjson.CheckSize("host record", b, MaxValueSize); err != nil {
		return HostRecord{}, fmt.Errorf("decode host record: %w", err)
	}
	var h HostRecord
	if err := strictjson.Unmarshal(b, &h); err != nil {
		return HostRecord{}, fmt.Errorf("decode host record: %w", err)
	}
	if h.Host == "" {
		return HostRecord{}, errors.New("decode host record: empty Host")
	}
	if err := names.CheckHost(h.Host); err != nil {
		return HostRecord{}, fmt.Errorf("decode host record: Host %q: %w", h.Host, err)
	}
	return h, nil
}
