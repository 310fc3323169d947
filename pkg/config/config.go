// Package config turns flannel-registrar's environment and command line into a validated Config.
//
// Every setting of the original tool keeps its environment variable name and meaning, and each
// also has a flag (the lower-kebab form of the name). The environment is read first and flags
// override it. Invalid settings are reported together, one line per problem, each naming the
// variable, the bad value and what is expected, so a user fixes everything in one go.
//
// The package is pure: the only I/O (reading /etc/hostname for HOST_NAME=auto and checking that
// the etcd TLS files exist) goes through Options, which tests replace.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Mode is what the binary was asked to do.
type Mode string

// Modes, chosen by the first non-flag argument or by the original's --once/--diagnose flags.
const (
	ModeRun      Mode = "run"
	ModeOnce     Mode = "once"
	ModeVersion  Mode = "version"
	ModeDiagnose Mode = "diagnose"
	ModePrepare  Mode = "prepare" // host sysctls at boot (the original's flannel-boot)
	ModeHealth   Mode = "health"  // check the running daemon's heartbeat (Docker HEALTHCHECK)
	ModeStatus   Mode = "status"
	ModeDoctor   Mode = "doctor"
)

// Recovery modes accepted by RECOVERY.
const (
	RecoveryOff     = "off"
	RecoveryFlannel = "flannel"
)

// GatewayRoute is one HOST_GATEWAY_MAP entry: reach Dst (a peer or a range of peers on the
// underlay) through Gateway.
type GatewayRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr
}

// String returns the entry in HOST_GATEWAY_MAP syntax.
func (r GatewayRoute) String() string { return r.Dst.String() + ":" + r.Gateway.String() }

// ExtraRoute is one FLANNEL_ROUTES_EXTRA entry; Dev is empty when the kernel picks the device.
type ExtraRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Dev     string
}

// String returns the entry in FLANNEL_ROUTES_EXTRA syntax.
func (r ExtraRoute) String() string {
	s := r.Dst.String() + ":" + r.Gateway.String()
	if r.Dev != "" {
		s += ":" + r.Dev
	}
	return s
}

// Config is the validated configuration. Durations and addresses are parsed; prefixes carry no
// trailing slash.
type Config struct {
	Mode Mode

	EtcdEndpoints []string // ETCD_ENDPOINT: each http(s)://host:port
	EtcdCAFile    string   // ETCD_CAFILE
	EtcdCertFile  string   // ETCD_CERTFILE (set together with EtcdKeyFile)
	EtcdKeyFile   string   // ETCD_KEYFILE
	EtcdUsername  string   // ETCD_USERNAME
	EtcdPassword  string   // ETCD_PASSWORD or the content of ETCD_PASSWORD_FILE (requires EtcdUsername); redacted by LogValue
	// EtcdPasswordFile is ETCD_PASSWORD_FILE, the file EtcdPassword was read from ("" when
	// ETCD_PASSWORD was given or neither).
	EtcdPasswordFile string

	FlannelPrefix string // FLANNEL_PREFIX, flannel's registry root
	ConfigPrefix  string // FLANNEL_CONFIG_PREFIX, the root of our records

	HostName string        // HOST_NAME, resolved when "auto"
	Interval time.Duration // INTERVAL, the resync fallback period

	RunAsRoot bool       // RUN_AS_ROOT
	PublicIP  netip.Addr // FLANNELD_PUBLIC_IP; invalid (zero) when not overridden

	HostGatewayMap []GatewayRoute // HOST_GATEWAY_MAP
	RoutesExtra    []ExtraRoute   // FLANNEL_ROUTES_EXTRA

	AllowedSubnets []netip.Prefix // ALLOWED_SUBNETS; nil: the policy's defaults
	MinPrefixLen   int            // MIN_PREFIX_LEN

	FlannelContainerName string // FLANNEL_CONTAINER_NAME
	Debug                bool   // DEBUG

	RegistrationTTL time.Duration // REGISTRATION_TTL, whole seconds (an etcd lease TTL)
	LogFormat       string        // LOG_FORMAT: "auto", "json" or "text"
	VXLANIface      string        // VXLAN_IFACE
	HealthFile      string        // HEALTH_FILE, the heartbeat the health command checks

	MetricsAddr string // METRICS_ADDR: host:port of /metrics, /healthz, /readyz; empty = off

	ProbeInterval time.Duration // PROBE_INTERVAL: period of the reachability probe of each peer

	Recovery         string        // RECOVERY: RecoveryOff or RecoveryFlannel
	RecoveryGrace    time.Duration // RECOVERY_GRACE: how long a fault lasts before a restart
	RecoveryCooldown time.Duration // RECOVERY_COOLDOWN: minimum time between restarts
	RecoveryDailyCap int           // RECOVERY_DAILY_CAP: restarts per 24 h at most

	JSON bool // --json: status prints JSON instead of a table

	// HostLivenessTTL is the TTL of the host record's lease, derived from Interval by
	// livenessTTL.
	HostLivenessTTL time.Duration
}

// Log formats accepted by LOG_FORMAT.
const (
	LogFormatAuto = "auto"
	LogFormatJSON = "json"
	LogFormatText = "text"
)

// ErrHelp is returned (possibly wrapped) when -h, --help or the help command is given; the
// caller prints Usage and exits successfully. It is flag.ErrHelp, so either matches errors.Is.
var ErrHelp = flag.ErrHelp

// SettingError is one invalid setting: its environment variable name, the value given and what
// is expected. Error() is a single line.
type SettingError struct {
	Setting  string // environment variable name, e.g. INTERVAL
	Value    string
	Expected string
}

func (e *SettingError) Error() string {
	return fmt.Sprintf("%s=%q: %s", e.Setting, e.Value, e.Expected)
}

// HostnameFile is read for HOST_NAME=auto, as the original did (compose mounts the host's file).
const HostnameFile = "/etc/hostname"

// Options holds the I/O that Load needs; a nil field uses the os package.
type Options struct {
	ReadFile func(name string) ([]byte, error)      // reads HostnameFile and ETCD_PASSWORD_FILE
	Hostname func() (string, error)                 // fallback when HostnameFile is missing or empty
	Stat     func(name string) (fs.FileInfo, error) // checks the etcd TLS files
}

func (o Options) withDefaults() Options {
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	if o.Hostname == nil {
		o.Hostname = os.Hostname
	}
	if o.Stat == nil {
		o.Stat = os.Stat
	}
	return o
}

// Load parses args (os.Args[1:], without the program name) and the environment (getenv; nil
// means an empty environment). Flags override the environment; empty values mean the default.
// All invalid settings are returned at once, joined with errors.Join, one line each.
func Load(args []string, getenv func(string) string) (Config, error) {
	return LoadWith(args, getenv, Options{})
}

// LoadWith is Load with the I/O of opts.
func LoadWith(args []string, getenv func(string) string, opts Options) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cl, err := parseCommandLine(args)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Mode: cl.mode, JSON: cl.json}
	if cl.mode == ModeVersion {
		// Printing the version must work even with a broken configuration.
		return cfg, nil
	}
	l := loader{opts: opts.withDefaults()}
	var errs []error
	for i, s := range settings {
		v := s.resolve(getenv, cl.values[i])
		if err := s.apply(&l, &cfg, v); err != nil {
			errs = append(errs, settingErrors(s.env, v, err)...)
		}
	}
	errs = append(errs, crossCheck(&cfg)...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	cfg.HostLivenessTTL = livenessTTL(cfg.Interval)
	return cfg, nil
}

// settingErrors turns a parse error into one SettingError per problem (list settings report
// each bad entry on its own line).
func settingErrors(env, value string, err error) []error {
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	out := make([]error, 0, len(parts))
	for _, p := range parts {
		out = append(out, &SettingError{Setting: env, Value: value, Expected: p.Error()})
	}
	return out
}

// livenessTTL derives the host record's lease TTL from INTERVAL. Three intervals let a host
// miss two refreshes before peers see it as gone. The floor of 15s keeps a short test INTERVAL
// from expiring the record across an etcd leader election or a slow keep-alive; the ceiling of
// 10m bounds how long a crashed host still looks alive when INTERVAL is long (the lease is
// kept alive by the etcd client, not by the resync, so a short TTL costs nothing).
func livenessTTL(interval time.Duration) time.Duration {
	return min(max(3*interval, 15*time.Second), 10*time.Minute)
}

// crossCheck validates rules that involve more than one setting.
func crossCheck(c *Config) []error {
	var errs []error
	if c.EtcdCertFile != "" && c.EtcdKeyFile == "" {
		errs = append(errs, &SettingError{"ETCD_KEYFILE", "", "ETCD_CERTFILE is set; expected the key file of that certificate (set both or neither)"})
	}
	if c.EtcdKeyFile != "" && c.EtcdCertFile == "" {
		errs = append(errs, &SettingError{"ETCD_CERTFILE", "", "ETCD_KEYFILE is set; expected the certificate of that key (set both or neither)"})
	}
	if c.EtcdPassword != "" && c.EtcdUsername == "" {
		from := "ETCD_PASSWORD"
		if c.EtcdPasswordFile != "" {
			from = "ETCD_PASSWORD_FILE"
		}
		errs = append(errs, &SettingError{"ETCD_USERNAME", "", from + " is set; expected the user name it belongs to"})
	}
	// Prefixes are set only when they parsed; a bad one has been reported already.
	if c.FlannelPrefix != "" && c.ConfigPrefix != "" {
		if err := checkPrefixes(c.FlannelPrefix, c.ConfigPrefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkPrefixes keeps our records out of flannel's registry and flannel's keys out of ours.
func checkPrefixes(flannelPrefix, configPrefix string) error {
	subnets := flannelPrefix + "/subnets"
	// flanneld watches <FLANNEL_PREFIX>/subnets as a plain string prefix (no trailing slash),
	// and every key it sees there must parse as a lease or it drops all its routes.
	if strings.HasPrefix(configPrefix, subnets) {
		return &SettingError{"FLANNEL_CONFIG_PREFIX", configPrefix, fmt.Sprintf(
			"must not start with FLANNEL_PREFIX+\"/subnets\" (%q): flanneld watches every key beginning with that string and drops all its routes on one it cannot parse as a lease; expected a separate prefix, e.g. /flannel/network/subnets",
			subnets)}
	}
	// The reverse: listing our prefix would return flannel's config and leases as records.
	if configPrefix == flannelPrefix || strings.HasPrefix(flannelPrefix, configPrefix+"/") {
		return &SettingError{"FLANNEL_CONFIG_PREFIX", configPrefix, fmt.Sprintf(
			"must not equal or contain FLANNEL_PREFIX (%q): our records would be mixed with flannel's config and leases; expected a separate prefix, e.g. /flannel/network/subnets",
			flannelPrefix)}
	}
	return nil
}

// Warnings returns what a valid configuration still gets wrong, one message each, for the
// daemon to log at start: an etcd user whose password would travel over a plain http://
// endpoint.
func (c Config) Warnings() []string {
	var out []string
	if c.EtcdUsername != "" {
		var plain []string
		for _, e := range c.EtcdEndpoints {
			if !strings.HasPrefix(strings.ToLower(e), "https://") {
				plain = append(plain, e)
			}
		}
		if len(plain) > 0 {
			out = append(out, fmt.Sprintf("ETCD_USERNAME is set but etcd endpoint(s) %s are not https: the etcd password (and every token) travels in clear text; use https:// endpoints",
				strings.Join(plain, ", ")))
		}
	}
	return out
}

// LogValue logs the configuration with the etcd password redacted.
func (c Config) LogValue() slog.Value {
	password := ""
	if c.EtcdPassword != "" {
		password = "<redacted>"
	}
	publicIP := ""
	if c.PublicIP.IsValid() {
		publicIP = c.PublicIP.String()
	}
	return slog.GroupValue(
		slog.String("mode", string(c.Mode)),
		slog.Any("etcd_endpoints", c.EtcdEndpoints),
		slog.String("etcd_cafile", c.EtcdCAFile),
		slog.String("etcd_certfile", c.EtcdCertFile),
		slog.String("etcd_keyfile", c.EtcdKeyFile),
		slog.String("etcd_username", c.EtcdUsername),
		slog.String("etcd_password", password),
		slog.String("etcd_password_file", c.EtcdPasswordFile),
		slog.String("flannel_prefix", c.FlannelPrefix),
		slog.String("config_prefix", c.ConfigPrefix),
		slog.String("host_name", c.HostName),
		slog.Duration("interval", c.Interval),
		slog.Bool("run_as_root", c.RunAsRoot),
		slog.String("public_ip", publicIP),
		slog.Any("host_gateway_map", stringsOf(c.HostGatewayMap)),
		slog.Any("routes_extra", stringsOf(c.RoutesExtra)),
		slog.Any("allowed_subnets", stringsOf(c.AllowedSubnets)),
		slog.Int("min_prefix_len", c.MinPrefixLen),
		slog.String("flannel_container_name", c.FlannelContainerName),
		slog.Bool("debug", c.Debug),
		slog.Duration("registration_ttl", c.RegistrationTTL),
		slog.String("log_format", c.LogFormat),
		slog.String("vxlan_iface", c.VXLANIface),
		slog.String("health_file", c.HealthFile),
		slog.Duration("host_liveness_ttl", c.HostLivenessTTL),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.Duration("probe_interval", c.ProbeInterval),
		slog.String("recovery", c.Recovery),
		slog.Duration("recovery_grace", c.RecoveryGrace),
		slog.Duration("recovery_cooldown", c.RecoveryCooldown),
		slog.Int("recovery_daily_cap", c.RecoveryDailyCap),
	)
}

func stringsOf[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}
