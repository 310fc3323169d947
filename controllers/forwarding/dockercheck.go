package forwarding

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types"
)

// VersionAPI is the part of the Docker client CheckDocker uses.
type VersionAPI interface {
	ServerVersion(ctx context.Context) (types.Version, error)
}

// CheckDocker asks the daemon for its version and returns
// DirectRoutingWarning's text for it ("" when there is nothing to say).
func CheckDocker(ctx context.Context, api VersionAPI, vxlan string) (string, error) {
	v, err := api.ServerVersion(ctx)
	if err != nil {
		return "", fmt.Errorf("docker version: %w", err)
	}
	return DirectRoutingWarning(v.Version, vxlan), nil
}

// DirectRoutingWarning returns a warning for the operator when the Docker
// engine version drops traffic routed straight to container addresses from
// other hosts (Docker ≥ 28.0, moby/moby#49792): overlay traffic arriving on
// the VXLAN device is then dropped in the raw table, before our forwarding
// rules see it. It names the remedy that version offers. It returns "" for
// older engines; a version it cannot parse gets a conditional warning.
func DirectRoutingWarning(version, vxlan string) string {
	if vxlan == "" {
		vxlan = DefaultVXLAN
	}
	major, minor, ok := parseVersion(version)
	if !ok {
		return fmt.Sprintf("cannot read Docker engine version %q: if it is 28.0 or newer, it drops traffic from other hosts "+
			"to container addresses (moby/moby#49792); %s", version, remedy(28, 2, vxlan))
	}
	if major < 28 {
		return ""
	}
	return fmt.Sprintf("Docker engine %s drops traffic from other hosts to container addresses unless allowed "+
		"(moby/moby#49792), so containers are unreachable across %s; %s", version, vxlan, remedy(major, minor, vxlan))
}

func remedy(major, minor int, vxlan string) string {
	if major == 28 && minor < 2 {
		return "upgrade to Docker 28.2 or newer and start dockerd with --allow-direct-routing, " +
			"or run dockerd with DOCKER_INSECURE_NO_IPTABLES_RAW=1, " +
			"or create each network with -o com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected"
	}
	return fmt.Sprintf("start dockerd with --allow-direct-routing (\"allow-direct-routing\": true in daemon.json), "+
		"or create each network with -o com.docker.network.bridge.trusted_host_interfaces=%s", vxlan)
}

// parseVersion reads "major.minor" from versions such as "28.5.2",
// "20.10.24+dfsg1", "v28.0.0-rc.1".
func parseVersion(v string) (major, minor int, ok bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, false
	}
	digits := parts[1] // "10" of "20.10", "0-rc" of "28.0-rc"
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	minor, err = strconv.Atoi(digits)
	if err != nil {
		return 0, 0, false
	}
	return major, minor, true
}
