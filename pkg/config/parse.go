package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/flannel-registrar/flannel-registrar/pkg/names"
	"github.com/flannel-registrar/flannel-registrar/pkg/policy"
)

// Parsers return an error whose text says what is expected; the caller prefixes the setting's
// name and value (SettingError). Several problems in one list come back joined.

// loader carries the injected I/O to the settings that need it.
type loader struct {
	opts Options
}

func (l *loader) file(dst *string, v string) error {
	if v == "" {
		return nil
	}
	*dst = v // even when invalid, so the cert/key pairing check does not add a second error
	fi, err := l.opts.Stat(v)
	if err != nil {
		return fmt.Errorf("expected an existing file (%w)", err)
	}
	if fi.IsDir() {
		return errors.New("expected a file, not a directory")
	}
	return nil
}

// passwordFile reads ETCD_PASSWORD_FILE into c.EtcdPassword, dropping one trailing newline
// (echo and editors add one; a password never ends in one). It runs after ETCD_PASSWORD.
func (l *loader) passwordFile(c *Config, v string) error {
	if v == "" {
		return nil
	}
	c.EtcdPasswordFile = v
	if c.EtcdPassword != "" {
		return errors.New("ETCD_PASSWORD is set too; expected only one of ETCD_PASSWORD and ETCD_PASSWORD_FILE")
	}
	b, err := l.opts.ReadFile(v)
	if err != nil {
		// The error names the file and why (missing, permission), never its content.
		return fmt.Errorf("cannot read the etcd password file (%w); expected a readable file holding the password", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return errors.New("the file is empty; expected the etcd password in it")
	}
	c.EtcdPassword = pw
	return nil
}

func (l *loader) hostname(v string) (string, error) {
	if !strings.EqualFold(v, "auto") {
		return v, checkHostname(v)
	}
	name, source, err := l.autoHostname()
	if err != nil {
		return "", err
	}
	if err := checkHostname(name); err != nil {
		return "", fmt.Errorf("%s gives %q: %w; or set HOST_NAME", source, name, err)
	}
	return name, nil
}

// autoHostname follows the original: the mounted /etc/hostname first (the container's own
// hostname is a random ID), then the kernel's.
func (l *loader) autoHostname() (name, source string, err error) {
	data, ferr := l.opts.ReadFile(HostnameFile)
	if ferr == nil {
		if name := firstHostnameLine(string(data)); name != "" {
			return name, HostnameFile, nil
		}
	}
	name, herr := l.opts.Hostname()
	name = strings.TrimSpace(name)
	if herr == nil && name != "" {
		return name, "the kernel hostname", nil
	}
	if ferr == nil {
		ferr = errors.New("empty")
	}
	if herr == nil {
		herr = errors.New("empty")
	}
	// Not %w: an error wrapping two is taken by settingErrors for a list of
	// problems and split into lines, while this is one problem.
	return "", "", fmt.Errorf("cannot determine the host name (%s: %v; hostname: %v): expected HOST_NAME set to this host's name, e.g. node-1", HostnameFile, ferr, herr) //nolint:errorlint // one problem, not a list (see above)
}

// firstHostnameLine skips blank lines and comments, which hostname(5) allows.
func firstHostnameLine(s string) string {
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return ""
}

// checkHostname applies the host name rule of names.CheckHost (RFC 1123, ASCII), the same rule
// that host names read from etcd must pass.
func checkHostname(s string) error { return names.CheckHost(s) }

func parseEndpoints(v string) ([]string, error) {
	var out []string
	var errs []error
	for _, e := range splitList(v) {
		if err := checkEndpoint(e); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: %w", e, err))
			continue
		}
		out = append(out, strings.TrimSuffix(e, "/"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, errors.New("expected at least one URL, e.g. http://127.0.0.1:2379")
	}
	return out, nil
}

func checkEndpoint(e string) error {
	const expected, example = "expected http(s)://host:port", ", e.g. http://127.0.0.1:2379"
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New(expected + example)
	}
	if u.User != nil {
		return errors.New(expected + " without credentials (they go in ETCD_USERNAME/ETCD_PASSWORD)" + example)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return errors.New(expected + example)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New(expected + " with a port of 1-65535" + example)
	}
	return nil
}

// parsePrefix normalises an etcd prefix: one trailing '/' is dropped, because keys are built as
// prefix + "/" + name and a doubled slash would make a different key.
func parsePrefix(v string) (string, error) {
	if !strings.HasPrefix(v, "/") {
		return "", errors.New("expected an etcd key prefix starting with '/', e.g. /coreos.com/network")
	}
	p := strings.TrimSuffix(v, "/")
	if p == "" {
		return "", errors.New("expected at least one segment after '/', e.g. /coreos.com/network")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "" {
			return "", errors.New("expected no empty segments ('//'), e.g. /coreos.com/network")
		}
	}
	if strings.ContainsFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", errors.New("expected no spaces or control characters, e.g. /coreos.com/network")
	}
	return p, nil
}

const intervalExpected = "expected a whole number of seconds >= 1 (e.g. 60) or a duration (e.g. 90s)"

func parseInterval(v string) (time.Duration, error) {
	d, err := parseSeconds(v)
	if err != nil || d < time.Second {
		return 0, errors.New(intervalExpected)
	}
	return d, nil
}

const ttlExpected = "expected a whole number of seconds >= 10 (e.g. 3600) or a duration of whole seconds >= 10s (e.g. 1h); etcd lease TTLs are whole seconds"

func parseTTL(v string) (time.Duration, error) {
	d, err := parseSeconds(v)
	if err != nil || d < 10*time.Second || d%time.Second != 0 {
		return 0, errors.New(ttlExpected)
	}
	return d, nil
}

// parseSeconds accepts the original's plain seconds and Go durations.
func parseSeconds(v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Second) || n < 0 {
			return 0, errors.New("out of range")
		}
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(v)
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, errors.New("expected true or false (also 1/0, yes/no)")
}

func parsePublicIP(v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("expected this host's IPv4 address on the underlay, e.g. 198.51.100.10")
	}
	if !usableUnicast(a) {
		return netip.Addr{}, errors.New("expected a unicast IPv4 address (not 0.0.0.0, loopback, multicast or broadcast), e.g. 198.51.100.10")
	}
	return a, nil
}

// usableUnicast rules out addresses that can never be a peer or a next hop.
func usableUnicast(a netip.Addr) bool {
	return a.Is4() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// splitList splits a comma list, ignoring blanks, so "a,b," and " a , b" are fine.
func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

const gatewayMapExpected = "expected ip|cidr:gateway with IPv4 addresses, e.g. 172.24.90.1:172.24.90.6 or 172.24.90.0/24:172.24.90.6"

// parseGatewayMap parses HOST_GATEWAY_MAP; a bare IP is a /32.
func parseGatewayMap(v string) ([]GatewayRoute, error) {
	return parseRouteList(v, "gateway", parseGatewayEntry, func(r GatewayRoute) netip.Prefix { return r.Dst })
}

func parseGatewayEntry(e string) (GatewayRoute, error) {
	dst, gw, ok := strings.Cut(e, ":")
	if !ok {
		return GatewayRoute{}, errors.New(gatewayMapExpected)
	}
	p, err := parseDst(dst)
	if err != nil {
		return GatewayRoute{}, err
	}
	g, err := parseGateway(gw)
	if err != nil {
		return GatewayRoute{}, err
	}
	return GatewayRoute{Dst: p, Gateway: g}, nil
}

const routesExtraExpected = "expected cidr:gateway[:dev] with IPv4 addresses, e.g. 10.10.0.0/16:198.51.100.1:eth0"

// parseRoutesExtra parses FLANNEL_ROUTES_EXTRA.
func parseRoutesExtra(v string) ([]ExtraRoute, error) {
	return parseRouteList(v, "route", parseExtraEntry, func(r ExtraRoute) netip.Prefix { return r.Dst })
}

// parseRouteList parses a comma-separated list of routes, at most one per
// destination (what names the one thing a destination may have). Every bad
// entry is reported, so one run shows all that needs fixing.
func parseRouteList[R any](v, what string, parse func(string) (R, error), dst func(R) netip.Prefix) ([]R, error) {
	var out []R
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, e := range splitList(v) {
		r, err := parse(e)
		if err == nil && seen[dst(r)] {
			err = fmt.Errorf("destination %s is listed twice; expected one %s per destination", dst(r), what)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %q: %w", e, err))
			continue
		}
		seen[dst(r)] = true
		out = append(out, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func parseExtraEntry(e string) (ExtraRoute, error) {
	parts := strings.Split(e, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return ExtraRoute{}, errors.New(routesExtraExpected)
	}
	p, err := parseDst(parts[0])
	if err != nil {
		return ExtraRoute{}, err
	}
	g, err := parseGateway(parts[1])
	if err != nil {
		return ExtraRoute{}, err
	}
	r := ExtraRoute{Dst: p, Gateway: g}
	if len(parts) == 3 {
		if r.Dev, err = parseIfname(parts[2]); err != nil {
			return ExtraRoute{}, fmt.Errorf("device %q: %w", parts[2], err)
		}
	}
	return r, nil
}

// parseDst reads an IPv4 address (as a /32) or a CIDR whose host bits are zero. The default
// route is refused: this tool must never take over a host's uplink; nor loopback or multicast.
func parseDst(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("destination %q: expected an IPv4 address or CIDR, e.g. 172.24.90.0/24", s)
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("destination %q has host bits set: expected %s", s, p.Masked())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("destination %q: expected an IPv4 address or CIDR, e.g. 172.24.90.1", s)
		}
		p = netip.PrefixFrom(a, 32)
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("destination %q is the default route: expected a narrower destination", s)
	}
	if a := p.Addr(); a.IsUnspecified() || a.IsMulticast() || p.Contains(netip.AddrFrom4([4]byte{127, 0, 0, 1})) {
		return netip.Prefix{}, fmt.Errorf("destination %q: expected unicast addresses (not 0.0.0.0, loopback or multicast)", s)
	}
	return p, nil
}

func parseGateway(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil || !usableUnicast(a) {
		return netip.Addr{}, fmt.Errorf("gateway %q: expected a unicast IPv4 address, e.g. 172.24.90.6", s)
	}
	return a, nil
}

// containerName is Docker's rule for container names; a leading '/' (as the API prints names)
// is accepted and dropped.
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

func parseContainerName(v string) (string, error) {
	name := strings.TrimPrefix(v, "/")
	if !containerName.MatchString(name) {
		return "", errors.New("expected a Docker container name: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at least 2 characters), e.g. flannel")
	}
	return name, nil
}

// parseIfname applies the kernel's dev_valid_name: 1-15 bytes, not "." or "..", no '/', ':'
// or whitespace.
func parseIfname(v string) (string, error) {
	const expected = "expected a Linux interface name: 1-15 characters, no '/', ':' or spaces, e.g. flannel.1"
	if v == "" || len(v) > 15 || v == "." || v == ".." ||
		strings.ContainsFunc(v, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", errors.New(expected)
	}
	return v, nil
}

// parseVXLANIface is parseIfname that also refuses the characters iptables gives a meaning in
// an interface name: '+' (a wildcard: "flannel+" would match every flannel* device in our
// forwarding rules) and '!' (negation).
func parseVXLANIface(v string) (string, error) {
	if strings.ContainsAny(v, "+!") {
		return "", errors.New("expected a Linux interface name without '+' or '!' (iptables reads them as a wildcard and a negation), e.g. flannel.1")
	}
	return parseIfname(v)
}

func parseLogFormat(v string) (string, error) {
	switch f := strings.ToLower(v); f {
	case LogFormatAuto, LogFormatJSON, LogFormatText:
		return f, nil
	}
	return "", errors.New("expected auto, json or text")
}

// parseAllowedSubnets reads ALLOWED_SUBNETS: IPv4 CIDRs without host bits.
// Empty means the policy's defaults (nil).
func parseAllowedSubnets(v string) ([]netip.Prefix, error) {
	if v == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("entry %q: expected IPv4 CIDRs, comma-separated, e.g. 10.5.0.0/16,172.16.0.0/12", f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("entry %q has host bits set: expected %s", f, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// parseMinPrefixLen reads MIN_PREFIX_LEN: a prefix length from 8 to 32 (a
// shorter one would let a single record cover whole private ranges).
func parseMinPrefixLen(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 32 {
		return 0, fmt.Errorf("expected a prefix length from 8 to 32, e.g. %d", policy.DefaultMinBits)
	}
	return n, nil
}

// parseListenAddr accepts host:port; "off" (or "none") disables the endpoints. An empty value
// never reaches here (it means the default).
func parseListenAddr(v string) (string, error) {
	if v == "off" || v == "none" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", errors.New("expected host:port (e.g. 127.0.0.1:9653 or :9653) or off")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", errors.New("expected a port 1-65535 after the colon")
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", errors.New("expected an IP address (or nothing, for all) before the port")
		}
	}
	return v, nil
}

func parseProbeInterval(v string) (time.Duration, error) {
	d, err := parseSeconds(v)
	if err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
		return 0, errors.New("expected a duration between 100ms and 5m (e.g. 2s)")
	}
	return d, nil
}

func parseRecovery(v string) (string, error) {
	switch strings.ToLower(v) {
	case RecoveryOff, "false", "no", "0":
		return RecoveryOff, nil
	case RecoveryFlannel:
		return RecoveryFlannel, nil
	}
	return "", errors.New("expected off or flannel")
}

func parsePositiveDuration(v string) (time.Duration, error) {
	d, err := parseSeconds(v)
	if err != nil || d <= 0 {
		return 0, errors.New("expected seconds or a duration > 0 (e.g. 30 or 30s)")
	}
	return d, nil
}

func parseDailyCap(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000 {
		return 0, errors.New("expected a whole number 0-1000 (0: never restart)")
	}
	return n, nil
}
