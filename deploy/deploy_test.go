package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"sigs.k8s.io/yaml"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

var units = []string{"flannel-registrar.service", "flannel-registrar-prepare.service"}

// systemd-analyze verify needs ExecStart's binary to exist, so it checks
// copies whose ExecStart points at a stand-in executable; everything else is
// verified as shipped. Any warning fails.
func TestUnitsVerify(t *testing.T) {
	sa := testutil.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	stub := filepath.Join(dir, "flannel-registrar")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/flannel-registrar", stub)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(sa, append([]string{"verify"}, paths...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// unitSettings returns Key=value lines of a unit (repeated keys joined by spaces).
func unitSettings(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		m[k] = strings.TrimSpace(m[k] + " " + v)
	}
	return m
}

func TestUnitsHardening(t *testing.T) {
	d := unitSettings(t, "flannel-registrar.service")
	for k, want := range map[string]string{
		"ExecStart":               "/usr/local/bin/flannel-registrar run",
		"EnvironmentFile":         "/etc/flannel-registrar/env",
		"Restart":                 "always",
		"CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW",
		"AmbientCapabilities":     "CAP_NET_ADMIN CAP_NET_RAW",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"SupplementaryGroups":     "docker",
		"DynamicUser":             "yes",
		"RuntimeDirectory":        "flannel-registrar",
		"Environment":             "HEALTH_FILE=/run/flannel-registrar/health",
		"ProtectKernelTunables":   "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
	} {
		if d[k] != want {
			t.Errorf("flannel-registrar.service %s=%q, want %q", k, d[k], want)
		}
	}
	p := unitSettings(t, "flannel-registrar-prepare.service")
	for k, want := range map[string]string{
		"ExecStart":             "/usr/local/bin/flannel-registrar prepare",
		"Type":                  "oneshot",
		"RemainAfterExit":       "yes",
		"CapabilityBoundingSet": "CAP_NET_ADMIN",
		"NoNewPrivileges":       "yes",
	} {
		if p[k] != want {
			t.Errorf("flannel-registrar-prepare.service %s=%q, want %q", k, p[k], want)
		}
	}
	if !slices.Contains(strings.Fields(p["Before"]), "docker.service") {
		t.Errorf("prepare Before=%q, want docker.service", p["Before"])
	}
}

// compose is the part of `docker-compose config` output the tests read.
type compose struct {
	Services map[string]struct {
		Image         string            `json:"image"`
		ContainerName string            `json:"container_name"`
		Restart       string            `json:"restart"`
		NetworkMode   string            `json:"network_mode"`
		CapAdd        []string          `json:"cap_add"`
		Volumes       []string          `json:"volumes"`
		Environment   map[string]string `json:"environment"`
		Healthcheck   struct {
			Test []string `json:"test"`
		} `json:"healthcheck"`
	} `json:"services"`
}

// composeConfig runs Debian's docker-compose (1.29) config on the repo's
// file with env and returns the resolved service.
func composeConfig(t *testing.T, env ...string) compose {
	t.Helper()
	dc := testutil.RequireBinary(t, "docker-compose")
	cmd := exec.Command(dc, "-f", "../docker-compose.yml", "config")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var c compose
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("parse docker-compose config output: %v\n%s", err, out)
	}
	return c
}

// The original's shape, with the lab's three overrides interpolated.
func TestComposeFile(t *testing.T) {
	def := composeConfig(t).Services["flannel-registrar"]
	if def.Image != "flannel-registrar:latest" || def.NetworkMode != "host" || def.Restart != "unless-stopped" ||
		!slices.Equal(def.CapAdd, []string{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("service: %+v", def)
	}
	if !slices.Contains(def.Volumes, "/var/run/docker.sock:/var/run/docker.sock:ro") || !slices.Contains(def.Volumes, "/etc/hostname:/etc/hostname:ro") {
		t.Errorf("volumes %v", def.Volumes)
	}
	for k, want := range map[string]string{
		"ETCD_ENDPOINT": "http://127.0.0.1:2379", "FLANNEL_PREFIX": "/coreos.com/network",
		"FLANNEL_CONFIG_PREFIX": "/flannel/network/subnets", "HOST_NAME": "auto", "INTERVAL": "60",
		"RUN_AS_ROOT": "false", "FLANNEL_CONTAINER_NAME": "flannel", "DEBUG": "false",
		"FLANNELD_PUBLIC_IP": "", "HOST_GATEWAY_MAP": "", "FLANNEL_ROUTES_EXTRA": "",
	} {
		if got, ok := def.Environment[k]; !ok || got != want {
			t.Errorf("environment %s=%q (set %v), want %q", k, got, ok, want)
		}
	}
	if !slices.Equal(def.Healthcheck.Test, []string{"CMD", "/usr/local/bin/flannel-registrar", "health"}) {
		t.Errorf("healthcheck %v", def.Healthcheck.Test)
	}

	lab := composeConfig(t, "ETCD_ENDPOINT=http://198.51.100.2:2379", "HOST_NAME=h1", "DOCKER_SOCKET=/run/frlab/h1/docker.sock").Services["flannel-registrar"]
	if lab.Environment["ETCD_ENDPOINT"] != "http://198.51.100.2:2379" || lab.Environment["HOST_NAME"] != "h1" ||
		!slices.Contains(lab.Volumes, "/run/frlab/h1/docker.sock:/var/run/docker.sock:ro") {
		t.Errorf("overrides not applied: %+v", lab)
	}
}

// The same file as Compose v2 loads it: compose-go is the loader (schema
// validation, interpolation, normalisation) of `docker compose`.
func TestComposeFileV2(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"},
		cli.WithName("flannel-registrar"),
		cli.WithEnv([]string{"ETCD_ENDPOINT=http://198.51.100.2:2379", "HOST_NAME=h1", "DOCKER_SOCKET=/run/frlab/h1/docker.sock"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose v2 loader: %v", err)
	}
	svc, ok := p.Services["flannel-registrar"]
	if !ok {
		t.Fatalf("services %v", p.ServiceNames())
	}
	if svc.Image != "flannel-registrar:latest" || svc.NetworkMode != "host" || svc.Restart != "unless-stopped" ||
		!slices.Equal(svc.CapAdd, []string{"NET_ADMIN", "NET_RAW"}) || svc.HealthCheck == nil ||
		!slices.Equal([]string(svc.HealthCheck.Test), []string{"CMD", "/usr/local/bin/flannel-registrar", "health"}) {
		t.Errorf("service %+v", svc)
	}
	var mounts []string
	for _, v := range svc.Volumes {
		mounts = append(mounts, fmt.Sprintf("%s:%s:%v", v.Source, v.Target, v.ReadOnly))
	}
	for _, want := range []string{"/run/frlab/h1/docker.sock:/var/run/docker.sock:true", "/etc/hostname:/etc/hostname:true"} {
		if !slices.Contains(mounts, want) {
			t.Errorf("volumes %v lack %s", mounts, want)
		}
	}
	if e := svc.Environment["ETCD_ENDPOINT"]; e == nil || *e != "http://198.51.100.2:2379" {
		t.Errorf("ETCD_ENDPOINT %v", e)
	}
	if e := svc.Environment["RUN_AS_ROOT"]; e == nil || *e != "false" {
		t.Errorf("RUN_AS_ROOT %v", e)
	}
}
