package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testOpts pretends /etc/hostname says "testhost"; Stat stays the real os.Stat on t.TempDir files.
var testOpts = Options{
	ReadFile: func(name string) ([]byte, error) {
		if name == HostnameFile {
			return []byte("testhost\n"), nil
		}
		return os.ReadFile(name)
	},
	Hostname: func() (string, error) { return "kernelhost", nil },
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func load(args []string, env map[string]string) (Config, error) {
	return LoadWith(args, mapEnv(env), testOpts)
}

func TestDefaults(t *testing.T) {
	got, err := load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Mode:                 ModeRun,
		EtcdEndpoints:        []string{"http://127.0.0.1:2379"},
		FlannelPrefix:        "/coreos.com/network",
		ConfigPrefix:         "/flannel/network/subnets",
		HostName:             "testhost",
		Interval:             60 * time.Second,
		FlannelContainerName: "flannel",
		RegistrationTTL:      time.Hour,
		LogFormat:            "auto",
		VXLANIface:           "flannel.1",
		HealthFile:           "/run/flannel-registrar/health",
		HostLivenessTTL:      3 * time.Minute,
		MinPrefixLen:         12,
		MetricsAddr:          "127.0.0.1:9653",
		ProbeInterval:        2 * time.Second,
		Recovery:             "off",
		RecoveryGrace:        30 * time.Second,
		RecoveryCooldown:     900 * time.Second,
		RecoveryDailyCap:     2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

// Empty values in the environment (VAR= in compose) mean the default, or none for lists.
func TestEmptyEnvMeansDefault(t *testing.T) {
	env := map[string]string{}
	for _, name := range EnvNames() {
		env[name] = ""
	}
	env["INTERVAL"] = "   "
	got, err := load(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	def, _ := load(nil, nil)
	if !reflect.DeepEqual(got, def) {
		t.Fatalf("empty env:\n got %+v\nwant %+v", got, def)
	}
}

type settingCase struct {
	env, flag    string
	value, other string // both valid; other is used to check that the flag overrides the env
	get          func(Config) any
	want         any
}

func settingCases(t *testing.T) []settingCase {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, ca2 := file("ca.pem"), file("ca2.pem")
	cert, key := file("cert.pem"), file("key.pem")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(" s3cret \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []settingCase{
		{"ETCD_ENDPOINT", "etcd-endpoint", "https://10.0.0.1:2379, http://[fd00::1]:2379/,", "http://a:1",
			func(c Config) any { return c.EtcdEndpoints }, []string{"https://10.0.0.1:2379", "http://[fd00::1]:2379"}},
		{"ETCD_CAFILE", "etcd-cafile", ca, ca2, func(c Config) any { return c.EtcdCAFile }, ca},
		{"ETCD_USERNAME", "etcd-username", "root", "bob", func(c Config) any { return c.EtcdUsername }, "root"},
		{"FLANNEL_PREFIX", "flannel-prefix", "/my/flannel/", "/x", func(c Config) any { return c.FlannelPrefix }, "/my/flannel"},
		{"FLANNEL_CONFIG_PREFIX", "flannel-config-prefix", "/reg/nets", "/x", func(c Config) any { return c.ConfigPrefix }, "/reg/nets"},
		{"HOST_NAME", "host-name", "node-1", "other", func(c Config) any { return c.HostName }, "node-1"},
		{"INTERVAL", "interval", "120", "5", func(c Config) any { return c.Interval }, 120 * time.Second},
		{"INTERVAL", "interval", "90s", "5", func(c Config) any { return c.Interval }, 90 * time.Second},
		{"INTERVAL", "interval", "1500ms", "5", func(c Config) any { return c.Interval }, 1500 * time.Millisecond},
		{"REGISTRATION_TTL", "registration-ttl", "600", "20", func(c Config) any { return c.RegistrationTTL }, 10 * time.Minute},
		{"REGISTRATION_TTL", "registration-ttl", "2h", "20", func(c Config) any { return c.RegistrationTTL }, 2 * time.Hour},
		{"RUN_AS_ROOT", "run-as-root", "true", "no", func(c Config) any { return c.RunAsRoot }, true},
		{"RUN_AS_ROOT", "run-as-root", "YES", "0", func(c Config) any { return c.RunAsRoot }, true},
		{"RUN_AS_ROOT", "run-as-root", "0", "yes", func(c Config) any { return c.RunAsRoot }, false},
		{"FLANNELD_PUBLIC_IP", "flanneld-public-ip", "198.51.100.7", "198.51.100.8",
			func(c Config) any { return c.PublicIP }, netip.MustParseAddr("198.51.100.7")},
		{"HOST_GATEWAY_MAP", "host-gateway-map", "172.24.90.1:172.24.90.6, 10.9.0.0/16:172.24.90.6", "1.2.3.4:5.6.7.8",
			func(c Config) any { return c.HostGatewayMap }, []GatewayRoute{
				{netip.MustParsePrefix("172.24.90.1/32"), netip.MustParseAddr("172.24.90.6")},
				{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParseAddr("172.24.90.6")},
			}},
		{"FLANNEL_ROUTES_EXTRA", "flannel-routes-extra", "10.10.0.0/16:198.51.100.1:eth0,10.11.0.0/16:198.51.100.2", "1.2.3.4:5.6.7.8",
			func(c Config) any { return c.RoutesExtra }, []ExtraRoute{
				{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParseAddr("198.51.100.1"), "eth0"},
				{netip.MustParsePrefix("10.11.0.0/16"), netip.MustParseAddr("198.51.100.2"), ""},
			}},
		{"ALLOWED_SUBNETS", "allowed-subnets", "10.5.0.0/16, 198.18.0.0/15", "10.0.0.0/8",
			func(c Config) any { return c.AllowedSubnets }, []netip.Prefix{
				netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("198.18.0.0/15"),
			}},
		{"MIN_PREFIX_LEN", "min-prefix-len", "16", "20", func(c Config) any { return c.MinPrefixLen }, 16},
		{"FLANNEL_CONTAINER_NAME", "flannel-container-name", "/flanneld_1", "other",
			func(c Config) any { return c.FlannelContainerName }, "flanneld_1"},
		{"DEBUG", "debug", "1", "false", func(c Config) any { return c.Debug }, true},
		{"LOG_FORMAT", "log-format", "JSON", "text", func(c Config) any { return c.LogFormat }, "json"},
		{"LOG_FORMAT", "log-format", "text", "json", func(c Config) any { return c.LogFormat }, "text"},
		{"VXLAN_IFACE", "vxlan-iface", "vxlan.42", "flannel.2", func(c Config) any { return c.VXLANIface }, "vxlan.42"},
		{"HEALTH_FILE", "health-file", "/run/frlab/h1/health", "/x", func(c Config) any { return c.HealthFile }, "/run/frlab/h1/health"},
		{"METRICS_ADDR", "metrics-addr", ":9100", "127.0.0.1:1", func(c Config) any { return c.MetricsAddr }, ":9100"},
		{"METRICS_ADDR", "metrics-addr", "off", "127.0.0.1:1", func(c Config) any { return c.MetricsAddr }, ""},
		{"PROBE_INTERVAL", "probe-interval", "500ms", "3s", func(c Config) any { return c.ProbeInterval }, 500 * time.Millisecond},
		{"RECOVERY", "recovery", "flannel", "off", func(c Config) any { return c.Recovery }, "flannel"},
		{"RECOVERY_GRACE", "recovery-grace", "5", "9s", func(c Config) any { return c.RecoveryGrace }, 5 * time.Second},
		{"RECOVERY_COOLDOWN", "recovery-cooldown", "1m", "9s", func(c Config) any { return c.RecoveryCooldown }, time.Minute},
		{"RECOVERY_DAILY_CAP", "recovery-daily-cap", "5", "1", func(c Config) any { return c.RecoveryDailyCap }, 5},
		// Settings that need a partner are given together with it.
		{"ETCD_CERTFILE", "etcd-certfile", cert, ca2, func(c Config) any { return c.EtcdCertFile }, cert},
		{"ETCD_KEYFILE", "etcd-keyfile", key, ca2, func(c Config) any { return c.EtcdKeyFile }, key},
		{"ETCD_PASSWORD", "etcd-password", " s3cret ", "x", func(c Config) any { return c.EtcdPassword }, " s3cret "},
		{"ETCD_PASSWORD_FILE", "etcd-password-file", pw, ca, func(c Config) any { return c.EtcdPassword }, " s3cret "},
	}
}

// partners are added to every case so that paired settings validate.
func partners(t *testing.T, envName string) map[string]string {
	switch envName {
	case "ETCD_CERTFILE", "ETCD_KEYFILE":
		dir := t.TempDir()
		p := filepath.Join(dir, "other.pem")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if envName == "ETCD_CERTFILE" {
			return map[string]string{"ETCD_KEYFILE": p}
		}
		return map[string]string{"ETCD_CERTFILE": p}
	case "ETCD_PASSWORD", "ETCD_PASSWORD_FILE":
		return map[string]string{"ETCD_USERNAME": "root"}
	}
	return map[string]string{}
}

func TestEverySetting(t *testing.T) {
	cases := settingCases(t)
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.env] = true
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			check := func(how string, args []string, env map[string]string) {
				t.Helper()
				c, err := load(args, env)
				if err != nil {
					t.Fatalf("%s: %v", how, err)
				}
				if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("%s: got %v, want %v", how, got, tc.want)
				}
			}
			env := partners(t, tc.env)
			env[tc.env] = tc.value
			check("env", nil, env)

			check("flag", []string{"--" + tc.flag + "=" + tc.value}, partners(t, tc.env))
			separate := []string{"-" + tc.flag, tc.value}
			if isBoolSetting(tc.env) {
				separate = []string{"-" + tc.flag + "=" + tc.value} // "-debug 1" is "-debug" and a command
			}
			check("single-dash flag", separate, partners(t, tc.env))

			env = partners(t, tc.env)
			env[tc.env] = tc.other
			check("flag overrides env", []string{"--" + tc.flag + "=" + tc.value}, env)
		})
	}
	for _, name := range EnvNames() {
		if !covered[name] {
			t.Errorf("no test case for %s", name)
		}
	}
}

func isBoolSetting(env string) bool {
	for _, s := range settings {
		if s.env == env {
			return s.boolean
		}
	}
	return false
}

func TestBoolFlagsWithoutValue(t *testing.T) {
	c, err := load([]string{"--debug", "--run-as-root"}, map[string]string{"DEBUG": "false", "RUN_AS_ROOT": "no"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug || !c.RunAsRoot {
		t.Fatalf("bare bool flags: debug=%v run-as-root=%v, want both true", c.Debug, c.RunAsRoot)
	}
	c, err = load([]string{"--debug=false"}, map[string]string{"DEBUG": "true"})
	if err != nil || c.Debug {
		t.Fatalf("--debug=false over DEBUG=true: debug=%v err=%v", c.Debug, err)
	}
}

func TestCommands(t *testing.T) {
	cases := []struct {
		args    []string
		want    Mode
		wantErr string
	}{
		{nil, ModeRun, ""},
		{[]string{"run"}, ModeRun, ""},
		{[]string{"once"}, ModeOnce, ""},
		{[]string{"--once"}, ModeOnce, ""},
		{[]string{"-once"}, ModeOnce, ""},
		{[]string{"--once=false"}, ModeRun, ""},
		{[]string{"once", "--once"}, ModeOnce, ""},
		{[]string{"diagnose"}, ModeDiagnose, ""},
		{[]string{"--diagnose"}, ModeDiagnose, ""},
		{[]string{"status", "--json"}, ModeStatus, ""},
		{[]string{"doctor"}, ModeDoctor, ""},
		{[]string{"version"}, ModeVersion, ""},
		{[]string{"--version"}, ModeVersion, ""},
		{[]string{"--debug", "once", "--interval", "5"}, ModeOnce, ""},
		{[]string{"once", "--interval=5", "--debug"}, ModeOnce, ""},
		{[]string{"once", "--diagnose"}, "", `conflicting commands diagnose and once`},
		{[]string{"--once", "--diagnose"}, "", `conflicting commands diagnose and once`},
		{[]string{"start"}, "", `unknown command "start": expected run, once, diagnose, status, doctor, version, prepare or health`},
		{[]string{"prepare"}, ModePrepare, ""},
		{[]string{"health"}, ModeHealth, ""},
		{[]string{"--debug", "false"}, "", `unknown command "false"`},
		{[]string{"once", "run"}, "", `unexpected argument "run" after command "once"`},
		{[]string{"--once=maybe"}, "", `--once="maybe": expected true or false`},
		{[]string{"--no-such-flag"}, "", `flag provided but not defined: -no-such-flag`},
		{[]string{"--interval"}, "", `flag needs an argument: -interval`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c, err := load(tc.args, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Mode != tc.want {
				t.Fatalf("mode = %q, want %q", c.Mode, tc.want)
			}
		})
	}
}

func TestFlagsAfterCommandApply(t *testing.T) {
	c, err := load([]string{"once", "--interval", "7", "--host-name=node-7"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != 7*time.Second || c.HostName != "node-7" {
		t.Fatalf("got interval %v host %q", c.Interval, c.HostName)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}, {"once", "--help"}} {
		_, err := load(args, nil)
		if !errors.Is(err, ErrHelp) {
			t.Errorf("%v: err = %v, want ErrHelp", args, err)
		}
	}
}

// version must print even when the configuration is broken.
func TestVersionIgnoresSettings(t *testing.T) {
	c, err := load([]string{"version"}, map[string]string{"INTERVAL": "abc"})
	if err != nil || c.Mode != ModeVersion {
		t.Fatalf("mode %q err %v", c.Mode, err)
	}
}

type errCase struct {
	name  string
	env   map[string]string
	args  []string
	want  []string // each must appear in some line of the error
	lines int      // number of error lines; 0 means 1
}

func TestValidationErrors(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists.pem")
	if err := os.WriteFile(exists, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []errCase{
		{"endpoint no scheme", e("ETCD_ENDPOINT", "10.0.0.1:2379"), nil,
			[]string{`ETCD_ENDPOINT="10.0.0.1:2379": endpoint "10.0.0.1:2379": expected http(s)://host:port`}, 0},
		{"endpoint no port", e("ETCD_ENDPOINT", "http://etcd"), nil,
			[]string{`ETCD_ENDPOINT="http://etcd": endpoint "http://etcd": expected http(s)://host:port`}, 0},
		{"endpoint bad port", e("ETCD_ENDPOINT", "http://etcd:70000"), nil,
			[]string{`ETCD_ENDPOINT="http://etcd:70000"`, `port of 1-65535`}, 0},
		{"endpoint path", e("ETCD_ENDPOINT", "http://etcd:2379/v2"), nil, []string{`ETCD_ENDPOINT="http://etcd:2379/v2"`}, 0},
		{"endpoint userinfo", e("ETCD_ENDPOINT", "http://u:p@etcd:2379"), nil, []string{`ETCD_ENDPOINT=`, `ETCD_USERNAME/ETCD_PASSWORD`}, 0},
		{"endpoint unix", e("ETCD_ENDPOINT", "unix:///run/etcd.sock"), nil, []string{`ETCD_ENDPOINT="unix:///run/etcd.sock"`}, 0},
		{"endpoint only commas", e("ETCD_ENDPOINT", ",,"), nil, []string{`ETCD_ENDPOINT=",,": expected at least one URL`}, 0},
		{"two bad endpoints", e("ETCD_ENDPOINT", "a,http://ok:1,b"), nil,
			[]string{`ETCD_ENDPOINT="a,http://ok:1,b": endpoint "a"`, `ETCD_ENDPOINT="a,http://ok:1,b": endpoint "b"`}, 2},
		{"cafile missing", e("ETCD_CAFILE", missing), nil, []string{`ETCD_CAFILE="` + missing + `": expected an existing file`}, 0},
		{"cafile dir", e("ETCD_CAFILE", dir), nil, []string{`ETCD_CAFILE="` + dir + `": expected a file, not a directory`}, 0},
		{"certfile missing", e("ETCD_CERTFILE", missing, "ETCD_KEYFILE", exists), nil,
			[]string{`ETCD_CERTFILE="` + missing + `": expected an existing file`}, 0},
		{"keyfile missing", e("ETCD_KEYFILE", missing, "ETCD_CERTFILE", exists), nil,
			[]string{`ETCD_KEYFILE="` + missing + `": expected an existing file`}, 0},
		{"cert without key", e("ETCD_CERTFILE", exists), nil, []string{`ETCD_KEYFILE="": ETCD_CERTFILE is set`}, 0},
		{"key without cert", e("ETCD_KEYFILE", exists), nil, []string{`ETCD_CERTFILE="": ETCD_KEYFILE is set`}, 0},
		{"password without user", e("ETCD_PASSWORD", "hunter2"), nil, []string{`ETCD_USERNAME="": ETCD_PASSWORD is set`}, 0},
		{"prefix relative", e("FLANNEL_PREFIX", "coreos.com/network"), nil,
			[]string{`FLANNEL_PREFIX="coreos.com/network": expected an etcd key prefix starting with '/'`}, 0},
		{"prefix root", e("FLANNEL_PREFIX", "/"), nil, []string{`FLANNEL_PREFIX="/": expected at least one segment`}, 0},
		{"prefix empty segment", e("FLANNEL_PREFIX", "/a//b"), nil, []string{`FLANNEL_PREFIX="/a//b": expected no empty segments`}, 0},
		{"prefix two trailing slashes", e("FLANNEL_CONFIG_PREFIX", "/a//"), nil, []string{`FLANNEL_CONFIG_PREFIX="/a//": expected no empty segments`}, 0},
		{"prefix space", e("FLANNEL_CONFIG_PREFIX", "/a b"), nil, []string{`FLANNEL_CONFIG_PREFIX="/a b": expected no spaces`}, 0},
		{"config under subnets", e("FLANNEL_CONFIG_PREFIX", "/coreos.com/network/subnets/reg"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/coreos.com/network/subnets/reg": must not start with FLANNEL_PREFIX+"/subnets" ("/coreos.com/network/subnets")`, `flanneld watches`}, 0},
		{"config equals subnets", e("FLANNEL_CONFIG_PREFIX", "/coreos.com/network/subnets/"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/coreos.com/network/subnets": must not start with`}, 0},
		{"config string-prefixed by subnets", e("FLANNEL_CONFIG_PREFIX", "/coreos.com/network/subnetsX"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/coreos.com/network/subnetsX": must not start with`}, 0},
		{"config under custom flannel prefix", e("FLANNEL_PREFIX", "/f/", "FLANNEL_CONFIG_PREFIX", "/f/subnets"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/f/subnets": must not start with FLANNEL_PREFIX+"/subnets" ("/f/subnets")`}, 0},
		{"config equals flannel prefix", e("FLANNEL_CONFIG_PREFIX", "/coreos.com/network"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/coreos.com/network": must not equal or contain FLANNEL_PREFIX`}, 0},
		{"config contains flannel prefix", e("FLANNEL_CONFIG_PREFIX", "/coreos.com"), nil,
			[]string{`FLANNEL_CONFIG_PREFIX="/coreos.com": must not equal or contain FLANNEL_PREFIX`}, 0},
		{"hostname underscore", e("HOST_NAME", "node_1"), nil, []string{`HOST_NAME="node_1": expected a hostname`}, 0},
		{"hostname slash", e("HOST_NAME", "a/b"), nil, []string{`HOST_NAME="a/b": expected a hostname`}, 0},
		{"hostname leading dash", e("HOST_NAME", "-node"), nil, []string{`HOST_NAME="-node": expected a hostname`}, 0},
		{"hostname trailing dash", e("HOST_NAME", "node-"), nil, []string{`HOST_NAME="node-": expected a hostname`}, 0},
		{"hostname empty label", e("HOST_NAME", "a..b"), nil, []string{`HOST_NAME="a..b": expected a hostname`}, 0},
		{"hostname long label", e("HOST_NAME", strings.Repeat("a", 64)), nil, []string{`HOST_NAME="aaaa`, `expected a hostname`}, 0},
		{"hostname too long", e("HOST_NAME", strings.Repeat("abcdefg.", 32)+"ab"), nil, []string{`HOST_NAME="abcdefg.`, `expected a hostname`}, 0},
		{"hostname unicode", e("HOST_NAME", "nöde"), nil, []string{`HOST_NAME="nöde": expected a hostname`}, 0},
		{"interval word", e("INTERVAL", "abc"), nil,
			[]string{`INTERVAL="abc": expected a whole number of seconds >= 1 (e.g. 60) or a duration (e.g. 90s)`}, 0},
		{"interval zero", e("INTERVAL", "0"), nil, []string{`INTERVAL="0": expected a whole number`}, 0},
		{"interval negative", e("INTERVAL", "-5"), nil, []string{`INTERVAL="-5": expected a whole number`}, 0},
		{"interval sub-second", e("INTERVAL", "500ms"), nil, []string{`INTERVAL="500ms": expected a whole number`}, 0},
		{"interval overflow", e("INTERVAL", "9999999999999999"), nil, []string{`INTERVAL="9999999999999999": expected`}, 0},
		{"interval float", e("INTERVAL", "1.5"), nil, []string{`INTERVAL="1.5": expected`}, 0},
		{"interval by flag", nil, []string{"--interval=abc"}, []string{`INTERVAL="abc": expected a whole number`}, 0},
		{"ttl too short", e("REGISTRATION_TTL", "5"), nil, []string{`REGISTRATION_TTL="5": expected a whole number of seconds >= 10`}, 0},
		{"ttl fractional", e("REGISTRATION_TTL", "10.5s"), nil, []string{`REGISTRATION_TTL="10.5s": expected`, `whole seconds`}, 0},
		{"ttl word", e("REGISTRATION_TTL", "forever"), nil, []string{`REGISTRATION_TTL="forever": expected`}, 0},
		{"run as root", e("RUN_AS_ROOT", "sure"), nil, []string{`RUN_AS_ROOT="sure": expected true or false`}, 0},
		{"debug", e("DEBUG", "2"), nil, []string{`DEBUG="2": expected true or false`}, 0},
		{"debug by flag", nil, []string{"--debug=maybe"}, []string{`DEBUG="maybe": expected true or false`}, 0},
		{"public ip garbage", e("FLANNELD_PUBLIC_IP", "192.168.4.X"), nil,
			[]string{`FLANNELD_PUBLIC_IP="192.168.4.X": expected this host's IPv4 address`}, 0},
		{"public ip v6", e("FLANNELD_PUBLIC_IP", "2001:db8::1"), nil, []string{`FLANNELD_PUBLIC_IP="2001:db8::1": expected this host's IPv4`}, 0},
		{"public ip loopback", e("FLANNELD_PUBLIC_IP", "127.0.0.1"), nil, []string{`FLANNELD_PUBLIC_IP="127.0.0.1": expected a unicast IPv4`}, 0},
		{"public ip unspecified", e("FLANNELD_PUBLIC_IP", "0.0.0.0"), nil, []string{`FLANNELD_PUBLIC_IP="0.0.0.0": expected a unicast IPv4`}, 0},
		{"public ip multicast", e("FLANNELD_PUBLIC_IP", "224.0.0.1"), nil, []string{`FLANNELD_PUBLIC_IP="224.0.0.1": expected a unicast`}, 0},
		{"gw map no colon", e("HOST_GATEWAY_MAP", "172.24.90.1"), nil,
			[]string{`HOST_GATEWAY_MAP="172.24.90.1": entry "172.24.90.1": expected ip|cidr:gateway`}, 0},
		{"gw map bad dst", e("HOST_GATEWAY_MAP", "1.2.3.4:5.6.7.8,host1:172.24.90.6"), nil,
			[]string{`HOST_GATEWAY_MAP="1.2.3.4:5.6.7.8,host1:172.24.90.6": entry "host1:172.24.90.6": destination "host1"`}, 0},
		{"gw map bad gw", e("HOST_GATEWAY_MAP", "172.24.90.1:gw"), nil, []string{`HOST_GATEWAY_MAP="172.24.90.1:gw": entry "172.24.90.1:gw": gateway "gw"`}, 0},
		{"gw map loopback gw", e("HOST_GATEWAY_MAP", "172.24.90.1:127.0.0.1"), nil, []string{`entry "172.24.90.1:127.0.0.1": gateway "127.0.0.1"`}, 0},
		{"gw map host bits", e("HOST_GATEWAY_MAP", "10.0.0.5/24:10.1.0.1"), nil,
			[]string{`HOST_GATEWAY_MAP="10.0.0.5/24:10.1.0.1": entry "10.0.0.5/24:10.1.0.1": destination "10.0.0.5/24" has host bits set: expected 10.0.0.0/24`}, 0},
		{"gw map default route", e("HOST_GATEWAY_MAP", "0.0.0.0/0:10.1.0.1"), nil, []string{`entry "0.0.0.0/0:10.1.0.1": destination "0.0.0.0/0" is the default route`}, 0},
		{"gw map unspecified dst", e("HOST_GATEWAY_MAP", "0.0.0.0:10.1.0.1"), nil, []string{`entry "0.0.0.0:10.1.0.1": destination "0.0.0.0": expected unicast`}, 0},
		{"extra loopback dst", e("FLANNEL_ROUTES_EXTRA", "127.0.0.0/8:10.1.0.1"), nil, []string{`entry "127.0.0.0/8:10.1.0.1": destination "127.0.0.0/8": expected unicast`}, 0},
		{"extra multicast dst", e("FLANNEL_ROUTES_EXTRA", "224.0.0.0/4:10.1.0.1"), nil, []string{`destination "224.0.0.0/4": expected unicast`}, 0},
		{"gw map duplicate", e("HOST_GATEWAY_MAP", "10.0.0.1:10.1.0.1,10.0.0.1/32:10.1.0.2"), nil,
			[]string{`entry "10.0.0.1/32:10.1.0.2": destination 10.0.0.1/32 is listed twice`}, 0},
		{"gw map v6", e("HOST_GATEWAY_MAP", "fd00::1:fd00::2"), nil, []string{`HOST_GATEWAY_MAP="fd00::1:fd00::2": entry`}, 0},
		{"gw map two bad entries", e("HOST_GATEWAY_MAP", "x,y"), nil,
			[]string{`HOST_GATEWAY_MAP="x,y": entry "x"`, `HOST_GATEWAY_MAP="x,y": entry "y"`}, 2},
		{"extra no gw", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/16"), nil,
			[]string{`FLANNEL_ROUTES_EXTRA="10.10.0.0/16": entry "10.10.0.0/16": expected cidr:gateway[:dev]`}, 0},
		{"extra too many parts", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/16:1.1.1.1:eth0:x"), nil, []string{`entry "10.10.0.0/16:1.1.1.1:eth0:x": expected cidr:gateway[:dev]`}, 0},
		{"extra bad dev", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/16:198.51.100.1:averyveryverylongname"), nil,
			[]string{`FLANNEL_ROUTES_EXTRA="10.10.0.0/16:198.51.100.1:averyveryverylongname": entry "10.10.0.0/16:198.51.100.1:averyveryverylongname": device "averyveryverylongname": expected a Linux interface name`}, 0},
		{"extra empty dev", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/16:198.51.100.1:"), nil, []string{`device "": expected a Linux interface name`}, 0},
		{"extra bad cidr", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/33:198.51.100.1"), nil, []string{`destination "10.10.0.0/33": expected an IPv4 address or CIDR`}, 0},
		{"extra duplicate", e("FLANNEL_ROUTES_EXTRA", "10.10.0.0/16:198.51.100.1,10.10.0.0/16:198.51.100.2:eth0"), nil, []string{`destination 10.10.0.0/16 is listed twice`}, 0},
		{"allowed not a cidr", e("ALLOWED_SUBNETS", "10.5.0.0"), nil, []string{`ALLOWED_SUBNETS="10.5.0.0": entry "10.5.0.0": expected IPv4 CIDRs`}, 0},
		{"allowed host bits", e("ALLOWED_SUBNETS", "10.5.0.1/16"), nil, []string{`entry "10.5.0.1/16" has host bits set: expected 10.5.0.0/16`}, 0},
		{"allowed v6", e("ALLOWED_SUBNETS", "fd00::/8"), nil, []string{`entry "fd00::/8": expected IPv4 CIDRs`}, 0},
		{"min prefix too short", e("MIN_PREFIX_LEN", "4"), nil, []string{`MIN_PREFIX_LEN="4": expected a prefix length from 8 to 32`}, 0},
		{"min prefix not a number", e("MIN_PREFIX_LEN", "/16"), nil, []string{`MIN_PREFIX_LEN="/16": expected a prefix length from 8 to 32`}, 0},
		{"container name short", e("FLANNEL_CONTAINER_NAME", "f"), nil, []string{`FLANNEL_CONTAINER_NAME="f": expected a Docker container name`}, 0},
		{"container name chars", e("FLANNEL_CONTAINER_NAME", "flannel:1"), nil, []string{`FLANNEL_CONTAINER_NAME="flannel:1": expected a Docker container name`}, 0},
		{"log format", e("LOG_FORMAT", "xml"), nil, []string{`LOG_FORMAT="xml": expected auto, json or text`}, 0},
		{"ifname long", e("VXLAN_IFACE", "flannel.1234567890"), nil, []string{`VXLAN_IFACE="flannel.1234567890": expected a Linux interface name`}, 0},
		{"ifname slash", e("VXLAN_IFACE", "a/b"), nil, []string{`VXLAN_IFACE="a/b": expected a Linux interface name`}, 0},
		{"ifname space", e("VXLAN_IFACE", "a b"), nil, []string{`VXLAN_IFACE="a b": expected a Linux interface name`}, 0},
		{"ifname dotdot", e("VXLAN_IFACE", ".."), nil, []string{`VXLAN_IFACE="..": expected a Linux interface name`}, 0},
		{"ifname colon", e("VXLAN_IFACE", "eth0:1"), nil, []string{`VXLAN_IFACE="eth0:1": expected a Linux interface name`}, 0},
		{"ifname iptables wildcard", e("VXLAN_IFACE", "flannel+"), nil, []string{`VXLAN_IFACE="flannel+": expected a Linux interface name without '+' or '!'`}, 0},
		{"ifname wildcard alone", e("VXLAN_IFACE", "+"), nil, []string{`VXLAN_IFACE="+": expected a Linux interface name without '+'`}, 0},
		{"ifname negation", e("VXLAN_IFACE", "!flannel.1"), nil, []string{`VXLAN_IFACE="!flannel.1": expected a Linux interface name without '+' or '!'`}, 0},
		{"ifname control", e("VXLAN_IFACE", "fl\x01"), nil, []string{`expected a Linux interface name`}, 0},
		{"password and password file", e("ETCD_USERNAME", "root", "ETCD_PASSWORD", "x", "ETCD_PASSWORD_FILE", exists), nil,
			[]string{`ETCD_PASSWORD_FILE="` + exists + `": ETCD_PASSWORD is set too; expected only one of ETCD_PASSWORD and ETCD_PASSWORD_FILE`}, 0},
		{"password file missing", e("ETCD_USERNAME", "root", "ETCD_PASSWORD_FILE", missing), nil,
			[]string{`ETCD_PASSWORD_FILE="` + missing + `": cannot read the etcd password file (open ` + missing + `: no such file or directory)`}, 0},
		{"password file is a dir", e("ETCD_USERNAME", "root", "ETCD_PASSWORD_FILE", dir), nil,
			[]string{`ETCD_PASSWORD_FILE="` + dir + `": cannot read the etcd password file`, "is a directory"}, 0},
		{"password file empty", e("ETCD_USERNAME", "root", "ETCD_PASSWORD_FILE", exists), nil,
			[]string{`ETCD_PASSWORD_FILE="` + exists + `": the file is empty`}, 0},
		{"password file without user", e("ETCD_PASSWORD_FILE", secretFile), nil, []string{`ETCD_USERNAME="": ETCD_PASSWORD_FILE is set`}, 0},
		{"password file flag and env password", e("ETCD_USERNAME", "root", "ETCD_PASSWORD", "x"), []string{"--etcd-password-file=" + secretFile},
			[]string{`ETCD_PASSWORD is set too`}, 0},
		{"health file relative", e("HEALTH_FILE", "run/health"), nil, []string{`HEALTH_FILE="run/health": expected an absolute file path`}, 0},
		{"control char is quoted, one line", e("HOST_NAME", "a\nb"), nil, []string{`HOST_NAME="a\nb": expected a hostname`}, 0},
		{"several at once", e("INTERVAL", "abc", "LOG_FORMAT", "xml", "DEBUG", "maybe"), nil,
			[]string{`INTERVAL="abc"`, `LOG_FORMAT="xml"`, `DEBUG="maybe"`}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.args, tc.env)
			if err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if want := max(tc.lines, 1); len(lines) != want {
				t.Errorf("got %d error lines, want %d:\n%v", len(lines), want, err)
			}
			for _, w := range tc.want {
				if !containsLine(lines, w) {
					t.Errorf("no error line contains %q; got:\n%v", w, err)
				}
			}
			var se *SettingError
			if !errors.As(err, &se) {
				t.Errorf("error %v is not a *SettingError", err)
			}
		})
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// The password is a secret: no error message or log line may contain it.
func TestPasswordNeverShown(t *testing.T) {
	_, err := load(nil, map[string]string{"ETCD_PASSWORD": "hunter2"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
	c, err := load(nil, map[string]string{"ETCD_PASSWORD": "hunter2", "ETCD_USERNAME": "root"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), `"etcd_password":"<redacted>"`) {
		t.Fatalf("log line: %s", buf.String())
	}
	if !strings.Contains(buf.String(), `"host_name":"testhost"`) {
		t.Fatalf("log line lacks fields: %s", buf.String())
	}
}

// TestPasswordFile: the file's content is the password, one trailing newline (LF or CRLF)
// dropped, everything else kept; it never shows in errors or logs.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"hunter2\n", "hunter2"},
		{"hunter2", "hunter2"},
		{"hunter2\r\n", "hunter2"},
		{"hunter2\n\n", "hunter2\n"},
		{" hunter2 \n", " hunter2 "},
	} {
		p := filepath.Join(dir, "pw")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := load(nil, map[string]string{"ETCD_USERNAME": "root", "ETCD_PASSWORD_FILE": p})
		if err != nil {
			t.Fatalf("%q: %v", tc.content, err)
		}
		if c.EtcdPassword != tc.want || c.EtcdPasswordFile != p {
			t.Errorf("%q: password %q from %q, want %q from %q", tc.content, c.EtcdPassword, c.EtcdPasswordFile, tc.want, p)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
		if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), `"etcd_password_file":"`+p+`"`) {
			t.Errorf("log line: %s", buf.String())
		}
	}
	p := filepath.Join(dir, "pw")
	_, err := load(nil, map[string]string{"ETCD_PASSWORD_FILE": p, "ETCD_PASSWORD": "other"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}

// TestWarnings: a user name with any plain http:// endpoint warns that the password travels in
// clear text; https everywhere, or no user, does not.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string // "" for no warning
	}{
		{map[string]string{}, ""},
		{map[string]string{"ETCD_ENDPOINT": "http://10.0.0.1:2379"}, ""},
		{map[string]string{"ETCD_USERNAME": "root", "ETCD_PASSWORD": "x"}, "etcd endpoint(s) http://127.0.0.1:2379 are not https"},
		{map[string]string{"ETCD_USERNAME": "root", "ETCD_PASSWORD": "x", "ETCD_ENDPOINT": "https://a:2379,http://b:2379,HTTP://c:2379"},
			"etcd endpoint(s) http://b:2379, HTTP://c:2379 are not https"},
		{map[string]string{"ETCD_USERNAME": "root", "ETCD_PASSWORD": "x", "ETCD_ENDPOINT": "https://a:2379, HTTPS://b:2379"}, ""},
	} {
		c, err := load(nil, tc.env)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		w := c.Warnings()
		switch {
		case tc.want == "" && len(w) != 0:
			t.Errorf("%v: warnings %q, want none", tc.env, w)
		case tc.want != "" && (len(w) != 1 || !strings.Contains(w[0], tc.want) || !strings.Contains(w[0], "clear text")):
			t.Errorf("%v: warnings %q, want one containing %q", tc.env, w, tc.want)
		}
		for _, line := range w {
			if strings.Contains(line, "x\"") {
				t.Errorf("warning shows the password: %s", line)
			}
		}
	}
}

func TestPrefixesAccepted(t *testing.T) {
	cases := []struct{ flannel, config, wantFlannel, wantConfig string }{
		{"/coreos.com/network", "/flannel/network/subnets", "/coreos.com/network", "/flannel/network/subnets"},
		{"/coreos.com/network/", "/flannel/network/subnets/", "/coreos.com/network", "/flannel/network/subnets"},
		// Under FLANNEL_PREFIX but not under its subnets: flannel never reads it.
		{"/coreos.com/network", "/coreos.com/network/registrar", "/coreos.com/network", "/coreos.com/network/registrar"},
		{"/coreos.com/network", "/coreos.com/net", "/coreos.com/network", "/coreos.com/net"},
		{"/coreos.com/network", "/coreos.com/networks", "/coreos.com/network", "/coreos.com/networks"},
	}
	for _, tc := range cases {
		c, err := load(nil, map[string]string{"FLANNEL_PREFIX": tc.flannel, "FLANNEL_CONFIG_PREFIX": tc.config})
		if err != nil {
			t.Errorf("%s, %s: %v", tc.flannel, tc.config, err)
			continue
		}
		if c.FlannelPrefix != tc.wantFlannel || c.ConfigPrefix != tc.wantConfig {
			t.Errorf("%s, %s: got %s, %s", tc.flannel, tc.config, c.FlannelPrefix, c.ConfigPrefix)
		}
	}
}

func TestHostNames(t *testing.T) {
	valid := []string{"node-1", "node1", "n", "1", "Node-1", "host.example.com", "a-b-c.d-e", "123-456",
		strings.Repeat("a", 63), strings.Repeat("abcdefg.", 31) + "abcde"} // 63-char label; 253 characters
	for _, h := range valid {
		c, err := load(nil, map[string]string{"HOST_NAME": h})
		if err != nil {
			t.Errorf("%q: %v", h, err)
		} else if c.HostName != h {
			t.Errorf("%q: got %q", h, c.HostName)
		}
	}
}

func TestHostNameAuto(t *testing.T) {
	notExist := func(string) ([]byte, error) { return nil, fs.ErrNotExist }
	file := func(s string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if name != HostnameFile {
				t.Errorf("read %q, want %q", name, HostnameFile)
			}
			return []byte(s), nil
		}
	}
	kernel := func(s string, err error) func() (string, error) {
		return func() (string, error) { return s, err }
	}
	cases := []struct {
		name     string
		value    string
		readFile func(string) ([]byte, error)
		hostname func() (string, error)
		want     string
		wantErr  []string
	}{
		{"file first line", "auto", file("node-1\nignored\n"), kernel("kernel", nil), "node-1", nil},
		{"default is auto", "", file("node-2"), kernel("kernel", nil), "node-2", nil},
		{"case-insensitive auto", "AUTO", file("node-3\n"), kernel("kernel", nil), "node-3", nil},
		{"comments and blanks skipped", "auto", file("\n# managed by x\n  node-4  \n"), kernel("kernel", nil), "node-4", nil},
		{"missing file uses kernel", "auto", notExist, kernel("node-5", nil), "node-5", nil},
		{"empty file uses kernel", "auto", file("\n\n"), kernel("node-6", nil), "node-6", nil},
		{"explicit name reads nothing", "node-7", func(string) ([]byte, error) {
			t.Error("hostname file read for explicit HOST_NAME")
			return nil, nil
		}, kernel("kernel", nil), "node-7", nil},
		{"invalid name in file", "auto", file("bad_name\n"), kernel("kernel", nil), "",
			[]string{`HOST_NAME="auto": /etc/hostname gives "bad_name": expected a hostname`}},
		{"invalid kernel name", "auto", notExist, kernel("bad/name", nil), "",
			[]string{`HOST_NAME="auto": the kernel hostname gives "bad/name": expected a hostname`}},
		{"nothing available", "auto", notExist, kernel("", errors.New("boom")), "",
			[]string{`HOST_NAME="auto": cannot determine the host name`, "boom", "expected HOST_NAME set"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadWith(nil, mapEnv(map[string]string{"HOST_NAME": tc.value}),
				Options{ReadFile: tc.readFile, Hostname: tc.hostname})
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, host %q", c.HostName)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans several lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.HostName != tc.want {
				t.Fatalf("host %q, want %q", c.HostName, tc.want)
			}
		})
	}
}

func TestHostLivenessTTL(t *testing.T) {
	cases := []struct {
		interval string
		want     time.Duration
	}{
		{"1", 15 * time.Second},
		{"5", 15 * time.Second},
		{"10", 30 * time.Second},
		{"60", 3 * time.Minute},
		{"200", 10 * time.Minute},
		{"24h", 10 * time.Minute},
	}
	for _, tc := range cases {
		c, err := load(nil, map[string]string{"INTERVAL": tc.interval})
		if err != nil {
			t.Fatal(err)
		}
		if c.HostLivenessTTL != tc.want {
			t.Errorf("INTERVAL=%s: liveness %v, want %v", tc.interval, c.HostLivenessTTL, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	var buf bytes.Buffer
	Usage(&buf)
	out := buf.String()
	for _, s := range settings {
		for _, want := range []string{"--" + s.flag + " ", "env " + s.env + ","} {
			if !strings.Contains(out, want) {
				t.Errorf("usage lacks %q", want)
			}
		}
		if s.def != "" && !strings.Contains(out, "default "+s.def+"\n") {
			t.Errorf("usage lacks default %q of %s", s.def, s.env)
		}
	}
	for _, w := range []string{"run", "once", "--once", "diagnose", "--diagnose", "version"} {
		if !strings.Contains(out, w) {
			t.Errorf("usage lacks %q", w)
		}
	}
	// The brief's list of variables, checked by name so a dropped setting fails here.
	for _, env := range []string{"ETCD_ENDPOINT", "FLANNEL_PREFIX", "FLANNEL_CONFIG_PREFIX", "HOST_NAME",
		"INTERVAL", "RUN_AS_ROOT", "FLANNELD_PUBLIC_IP", "HOST_GATEWAY_MAP", "FLANNEL_ROUTES_EXTRA",
		"FLANNEL_CONTAINER_NAME", "DEBUG", "ETCD_CAFILE", "ETCD_CERTFILE", "ETCD_KEYFILE", "ETCD_USERNAME",
		"ETCD_PASSWORD", "ETCD_PASSWORD_FILE", "REGISTRATION_TTL", "LOG_FORMAT", "VXLAN_IFACE"} {
		if !strings.Contains(out, "env "+env+",") {
			t.Errorf("usage lacks %s", env)
		}
	}
}

func TestRouteStringRoundTrip(t *testing.T) {
	in := "10.0.0.1:10.1.0.1,10.2.0.0/16:10.1.0.2"
	gw, err := parseGatewayMap(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(stringsOf(gw), ","); got != "10.0.0.1/32:10.1.0.1,10.2.0.0/16:10.1.0.2" {
		t.Fatalf("got %s", got)
	}
	ex, err := parseRoutesExtra("10.2.0.0/16:10.1.0.2:eth0,10.3.0.0/16:10.1.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(stringsOf(ex), ","); got != "10.2.0.0/16:10.1.0.2:eth0,10.3.0.0/16:10.1.0.2" {
		t.Fatalf("got %s", got)
	}
}
