// Package lab brings up a multi-host flannel lab on one Linux machine (as
// root): an underlay network namespace with a bridge, one namespace per
// simulated host joined to it by a veth pair, a real etcd cluster (1 or 3
// members, each in a namespace of its own on the underlay),
// and in every host a real flanneld (VXLAN backend), a real dockerd with
// Docker's default iptables behaviour, a busybox test image, and optionally
// flannel-registrar.
//
// Nothing in the root network namespace changes: every address, route,
// link and iptables rule of the lab lives in its own namespaces. Every
// process the lab starts has a pidfile in the state directory, and Down
// removes everything by naming convention, also after a crash of the lab
// itself or of Up midway.
//
// The package is a library for hack/labctl, hack/e2e and hack/bench; it
// returns errors and reports progress through Options.Progress, it does
// not log.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Lab-wide constants. The addresses are documentation/benchmark ranges, so
// no lab packet can ever be mistaken for real traffic.
const (
	DefaultStateDir = "/run/frlab"
	DefaultHosts    = 3

	UnderlayCIDRLen = 24
	// EtcdIP and EtcdClientURL are member 1's; EtcdEndpoints lists every
	// member's (what the lab's daemons are given).
	EtcdIP        = "198.51.100.2"
	EtcdClientURL = "http://" + EtcdIP + ":2379"
	// DefaultEtcdMembers is Options.EtcdMembers' default (labctl's is 3).
	DefaultEtcdMembers = 1

	FlannelPrefix  = "/coreos.com/network"
	FlannelNetwork = "198.18.0.0/16"
	// AllowedSubnets is the registrars' ALLOWED_SUBNETS: flannel's Network
	// and the custom networks' 198.19.0.0/16.
	AllowedSubnets = "198.18.0.0/15"
	FlannelConfig  = `{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}`
	VXLANDevice    = "flannel.1"

	Image     = "frlab/busybox:latest"
	ProbePort = 7000 // every lab container answers TCP here with its socket table
)

// Options configure Up.
type Options struct {
	Hosts int // number of simulated hosts (default 3)
	// Topology is TopologyFlat (one underlay subnet) or TopologyRouted
	// (two subnets joined only by a gateway namespace: gateway.go).
	Topology string `json:",omitempty"`
	// GatewayMap (routed topology) starts every registrar with the
	// HOST_GATEWAY_MAP that routes the other side via its gateway
	// (Host.GatewayMapEnv); off, the two sides do not reach each other.
	GatewayMap bool `json:",omitempty"`
	// EtcdMembers is the size of the lab's etcd cluster: 1 or 3
	// (default DefaultEtcdMembers).
	EtcdMembers int
	// StateDir holds pidfiles, logs and daemon data (default /run/frlab).
	// Its base name must start with "frlab" and names the lab's network
	// namespaces: /run/frlab -> frlab-underlay, frlab-h1, ...
	StateDir string

	Registrar       bool     // start flannel-registrar on every host
	RegistrarBinary string   // prebuilt binary; empty: built from RepoRoot/cmd/flannel-registrar
	RegistrarEnv    []string // extra KEY=VALUE for the registrar (override the lab's defaults)
	Interval        int      // registrar INTERVAL in seconds (default 10)
	// RegistrarContainer runs the registrar as a container from the image
	// `make image` builds, started with the repo's docker-compose.yml (see
	// container.go) instead of the binary. RegistrarEnv and Interval do not
	// apply: the compose file's defaults do.
	RegistrarContainer bool
	RegistrarImageFile string // prebuilt image tarball (docker save); empty: built by hack/build-image.sh

	RepoRoot       string // module root; default: found from the working directory
	FlanneldBinary string // default: FindFlanneld()
	GoBinary       string // default: go on PATH or /usr/local/go/bin/go

	// Progress, when set, receives one line per step of Up.
	Progress func(msg string) `json:"-"`
}

// Lab is a running (or partly running) lab, described by its state directory.
type Lab struct {
	Options
	Prefix string // namespace name prefix, from the state dir: "frlab-"
	Hosts  []*Host
}

// Host is one simulated host: a network namespace with its daemons.
type Host struct {
	Name  string // h1, h2, ...
	Index int    // 1-based
	Netns string // <prefix>h1
	IP    string // underlay address, 198.51.100.(10+Index) (hostIP)
	Dir   string // <state>/h1

	lab *Lab
}

func (o *Options) setDefaults() error {
	if o.Hosts == 0 {
		o.Hosts = DefaultHosts
	}
	if o.Hosts < 1 || o.Hosts > 200 {
		return fmt.Errorf("hosts: %d, expected 1..200", o.Hosts)
	}
	if o.EtcdMembers == 0 {
		o.EtcdMembers = DefaultEtcdMembers
	}
	if o.EtcdMembers != 1 && o.EtcdMembers != 3 {
		return fmt.Errorf("etcd members: %d, expected 1 or 3", o.EtcdMembers)
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return fmt.Errorf("state dir %q: %w", o.StateDir, err)
	}
	o.StateDir = abs
	if !strings.HasPrefix(filepath.Base(o.StateDir), "frlab") {
		return fmt.Errorf("state dir %s: its base name must start with \"frlab\"", o.StateDir)
	}
	if o.Interval == 0 {
		o.Interval = 10
	}
	return o.checkTopology()
}

func newLab(o Options) *Lab {
	l := &Lab{Options: o, Prefix: NetnsPrefix(o.StateDir)}
	for i := 1; i <= o.Hosts; i++ {
		name := "h" + strconv.Itoa(i)
		l.Hosts = append(l.Hosts, &Host{
			Name:  name,
			Index: i,
			Netns: l.Prefix + name,
			IP:    hostIP(o, i),
			Dir:   filepath.Join(o.StateDir, name),
			lab:   l,
		})
	}
	return l
}

// Host returns host number i (1-based).
func (l *Lab) Host(i int) *Host { return l.Hosts[i-1] }

// UnderlayNetns is the name of the underlay namespace (the bridge).
func (l *Lab) UnderlayNetns() string { return l.Prefix + "underlay" }

func (l *Lab) progress(format string, args ...any) {
	if l.Progress != nil {
		l.Progress(fmt.Sprintf(format, args...))
	}
}

func (l *Lab) path(elem ...string) string {
	return filepath.Join(append([]string{l.StateDir}, elem...)...)
}

func (h *Host) path(elem ...string) string {
	return filepath.Join(append([]string{h.Dir}, elem...)...)
}

// NetnsPrefix is the namespace name prefix of the lab in stateDir: its
// base name and a dash, so labs in different state dirs never share a name.
func NetnsPrefix(stateDir string) string { return filepath.Base(stateDir) + "-" }

// NetnsPath is the namespace's bind mount, for nsenter --net=.
func NetnsPath(name string) string { return "/var/run/netns/" + name }

const stateFile = "lab.json"

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l.Options, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	if err := os.WriteFile(l.path(stateFile), b, 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// ErrNoLab is returned by Load when the state directory holds no lab.
var ErrNoLab = errors.New("no lab in state directory")

// Load describes the lab whose state is in stateDir (as left by Up, also by
// an Up that failed midway or a process that crashed).
func Load(stateDir string) (*Lab, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	b, err := os.ReadFile(filepath.Join(stateDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", stateDir, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var o Options
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(stateDir, stateFile), err)
	}
	o.StateDir = stateDir
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	return newLab(o), nil
}
