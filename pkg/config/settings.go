package config

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
)

// setting is one environment variable and its flag. Values are strings until apply parses them,
// so env and flags share one parser and one error format.
type setting struct {
	env     string
	flag    string
	def     string // used when both env and flag are empty
	metavar string
	help    string
	boolean bool // the flag may be given without a value
	secret  bool // not trimmed; never echoed
	apply   func(l *loader, c *Config, v string) error
}

// resolve applies the precedence default < environment < flag; an empty value means the
// default, so "VAR=" in a compose file behaves like an unset variable.
func (s setting) resolve(getenv func(string) string, fv *rawValue) string {
	v := getenv(s.env)
	if fv != nil && fv.set {
		v = fv.s
	}
	if !s.secret {
		// Stray spaces around values are a common copy-paste error, never meaningful here.
		v = strings.TrimSpace(v)
	}
	if v == "" {
		v = s.def
	}
	return v
}

// DefaultEtcdEndpoint is ETCD_ENDPOINT's default. The original defaulted to one lab's address;
// a local etcd is the only neutral choice.
const DefaultEtcdEndpoint = "http://127.0.0.1:2379"

// DefaultMetricsAddr is METRICS_ADDR's default: loopback, so the endpoints are not exposed
// beyond the host unless asked (9653 is unassigned in Prometheus's port list).
const DefaultMetricsAddr = "127.0.0.1:9653"

var settings = []setting{
	{env: "ETCD_ENDPOINT", flag: "etcd-endpoint", def: DefaultEtcdEndpoint, metavar: "URLS",
		help: "etcd client URLs, comma-separated, each http(s)://host:port",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.EtcdEndpoints, err = parseEndpoints(v)
			return err
		}},
	{env: "ETCD_CAFILE", flag: "etcd-cafile", metavar: "FILE",
		help:  "CA bundle (PEM) to verify etcd's server certificate; system roots when empty",
		apply: func(l *loader, c *Config, v string) error { return l.file(&c.EtcdCAFile, v) }},
	{env: "ETCD_CERTFILE", flag: "etcd-certfile", metavar: "FILE",
		help:  "client certificate (PEM) for etcd; needs ETCD_KEYFILE",
		apply: func(l *loader, c *Config, v string) error { return l.file(&c.EtcdCertFile, v) }},
	{env: "ETCD_KEYFILE", flag: "etcd-keyfile", metavar: "FILE",
		help:  "client private key (PEM) for etcd; needs ETCD_CERTFILE",
		apply: func(l *loader, c *Config, v string) error { return l.file(&c.EtcdKeyFile, v) }},
	{env: "ETCD_USERNAME", flag: "etcd-username", metavar: "NAME",
		help:  "etcd user name (etcd authentication)",
		apply: func(_ *loader, c *Config, v string) error { c.EtcdUsername = v; return nil }},
	{env: "ETCD_PASSWORD", flag: "etcd-password", metavar: "PASSWORD", secret: true,
		help:  "etcd password; needs ETCD_USERNAME (prefer ETCD_PASSWORD_FILE or the environment: flags are visible in ps)",
		apply: func(_ *loader, c *Config, v string) error { c.EtcdPassword = v; return nil }},
	{env: "ETCD_PASSWORD_FILE", flag: "etcd-password-file", metavar: "FILE",
		help:  "file holding the etcd password (e.g. a Docker secret; a trailing newline is dropped); instead of ETCD_PASSWORD, needs ETCD_USERNAME",
		apply: func(l *loader, c *Config, v string) error { return l.passwordFile(c, v) }},
	{env: "FLANNEL_PREFIX", flag: "flannel-prefix", def: "/coreos.com/network", metavar: "PREFIX",
		help: "flannel's etcd prefix (its config and <prefix>/subnets leases)",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.FlannelPrefix, err = parsePrefix(v)
			return err
		}},
	{env: "FLANNEL_CONFIG_PREFIX", flag: "flannel-config-prefix", def: "/flannel/network/subnets", metavar: "PREFIX",
		help: "etcd prefix of this tool's records; must not start with FLANNEL_PREFIX/subnets",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.ConfigPrefix, err = parsePrefix(v)
			return err
		}},
	{env: "HOST_NAME", flag: "host-name", def: "auto", metavar: "NAME",
		help: "this host's name in etcd; auto = first line of /etc/hostname, else the kernel's hostname",
		apply: func(l *loader, c *Config, v string) (err error) {
			c.HostName, err = l.hostname(v)
			return err
		}},
	{env: "INTERVAL", flag: "interval", def: "60", metavar: "SECONDS",
		help: "full resync period (fallback; changes are handled as they happen): seconds or a duration like 90s",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.Interval, err = parseInterval(v)
			return err
		}},
	{env: "REGISTRATION_TTL", flag: "registration-ttl", def: "3600", metavar: "SECONDS",
		help: "TTL of the etcd lease holding this host's records (kept alive while running): seconds or a duration, >= 10s",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RegistrationTTL, err = parseTTL(v)
			return err
		}},
	{env: "RUN_AS_ROOT", flag: "run-as-root", def: "false", metavar: "BOOL", boolean: true,
		help: "false: started as root, the daemon joins the Docker socket's group, switches to uid 65534 and keeps only NET_ADMIN; true: it keeps the privileges it is started with",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RunAsRoot, err = parseBool(v)
			return err
		}},
	{env: "FLANNELD_PUBLIC_IP", flag: "flanneld-public-ip", metavar: "IPV4",
		help: "override this host's public (underlay) IPv4; default: the PublicIP of flanneld's lease for this host's VTEP MAC, else the VXLAN device's local address",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.PublicIP, err = parsePublicIP(v)
			return err
		}},
	{env: "HOST_GATEWAY_MAP", flag: "host-gateway-map", metavar: "LIST",
		help: "underlay routes to peers not directly reachable: ip|cidr:gateway, comma-separated",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.HostGatewayMap, err = parseGatewayMap(v)
			return err
		}},
	{env: "FLANNEL_ROUTES_EXTRA", flag: "flannel-routes-extra", metavar: "LIST",
		help: "extra static routes: cidr:gateway[:dev], comma-separated; removed when dropped from the list",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RoutesExtra, err = parseRoutesExtra(v)
			return err
		}},
	{env: "ALLOWED_SUBNETS", flag: "allowed-subnets", metavar: "CIDRS",
		help: "ranges a subnet must lie in to be routed or published, comma-separated; default: flannel's Network (from <FLANNEL_PREFIX>/config) and 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.AllowedSubnets, err = parseAllowedSubnets(v)
			return err
		}},
	{env: "MIN_PREFIX_LEN", flag: "min-prefix-len", def: strconv.Itoa(policy.DefaultMinBits), metavar: "BITS",
		help: "shortest prefix length of a subnet that is routed or published (8-32)",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.MinPrefixLen, err = parseMinPrefixLen(v)
			return err
		}},
	{env: "FLANNEL_CONTAINER_NAME", flag: "flannel-container-name", def: "flannel", metavar: "NAME",
		help: "name of the Docker container running flanneld; restarted by RECOVERY=flannel",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.FlannelContainerName, err = parseContainerName(v)
			return err
		}},
	{env: "VXLAN_IFACE", flag: "vxlan-iface", def: "flannel.1", metavar: "IFNAME",
		help: "flannel's VXLAN device",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.VXLANIface, err = parseVXLANIface(v)
			return err
		}},
	{env: "HEALTH_FILE", flag: "health-file", def: "/run/flannel-registrar/health", metavar: "FILE",
		help: "heartbeat file the daemon rewrites every 5s and the health command checks",
		apply: func(_ *loader, c *Config, v string) error {
			if !strings.HasPrefix(v, "/") || strings.HasSuffix(v, "/") {
				return fmt.Errorf("expected an absolute file path")
			}
			c.HealthFile = v
			return nil
		}},
	{env: "METRICS_ADDR", flag: "metrics-addr", def: DefaultMetricsAddr, metavar: "HOST:PORT",
		help: "listen address of /metrics (Prometheus), /healthz and /readyz; \"off\" disables them",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.MetricsAddr, err = parseListenAddr(v)
			return err
		}},
	{env: "PROBE_INTERVAL", flag: "probe-interval", def: "2s", metavar: "DURATION",
		help: "how often each peer's VXLAN device is pinged through the overlay (probes are spread over the period); a peer is unreachable after 3 missed probes",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.ProbeInterval, err = parseProbeInterval(v)
			return err
		}},
	{env: "RECOVERY", flag: "recovery", def: RecoveryOff, metavar: "MODE",
		help: "off, or flannel: restart the FLANNEL_CONTAINER_NAME container when the VXLAN device or this host's flannel lease stays missing for RECOVERY_GRACE",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.Recovery, err = parseRecovery(v)
			return err
		}},
	{env: "RECOVERY_GRACE", flag: "recovery-grace", def: "30s", metavar: "DURATION",
		help: "how long a fault must last before RECOVERY acts (seconds or a duration)",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RecoveryGrace, err = parsePositiveDuration(v)
			return err
		}},
	{env: "RECOVERY_COOLDOWN", flag: "recovery-cooldown", def: "900", metavar: "SECONDS",
		help: "minimum time between two restarts by RECOVERY (seconds or a duration)",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RecoveryCooldown, err = parsePositiveDuration(v)
			return err
		}},
	{env: "RECOVERY_DAILY_CAP", flag: "recovery-daily-cap", def: "2", metavar: "N",
		help: "most restarts by RECOVERY in any 24 hours",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.RecoveryDailyCap, err = parseDailyCap(v)
			return err
		}},
	{env: "LOG_FORMAT", flag: "log-format", def: LogFormatAuto, metavar: "FORMAT",
		help: "auto (text on a terminal, JSON otherwise), json or text",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.LogFormat, err = parseLogFormat(v)
			return err
		}},
	{env: "DEBUG", flag: "debug", def: "false", metavar: "BOOL", boolean: true,
		help: "log at debug level (includes reconciles that changed nothing)",
		apply: func(_ *loader, c *Config, v string) (err error) {
			c.Debug, err = parseBool(v)
			return err
		}},
}

// EnvNames lists every environment variable Load reads, in Usage order.
func EnvNames() []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.env
	}
	return out
}

// Usage prints the commands and every setting: flag, environment variable, default, meaning.
func Usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(`Usage: flannel-registrar [command] [flags]

Registers this host's Docker networks in etcd and routes other hosts' networks through
flannel's VXLAN device.

Commands:
  run        run the daemon (default)
  once       one full pass, then exit (also --once)
  diagnose   print this host's network state, then exit (also --diagnose)
  status     print the cluster as etcd holds it (--json for JSON), then exit
  doctor     check this host's setup; exit status 1 when a check fails
  version    print the version, then exit (also --version)
  prepare    set net.ipv4.ip_forward=1 and a loose rp_filter for VXLAN_IFACE, then exit (run as root at boot)
  health     exit 0 if the running daemon's HEALTH_FILE is fresh and ready, else 1 (Docker HEALTHCHECK)
  help       print this help (also -h, --help)

Settings: each flag can be given as its environment variable instead; flags override the
environment, and an empty value means the default. Flags may come before or after the command.
Boolean values: true/false, 1/0, yes/no; a boolean flag alone means true, else use --flag=value.

`)
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(&b, "  --%s %s\n      env %s, default %s\n      %s\n", s.flag, s.metavar, s.env, def, s.help)
	}
	// Help goes to the terminal; there is nobody to tell if that fails.
	_, _ = io.WriteString(w, b.String())
}
