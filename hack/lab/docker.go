package lab

import (
	"context"
	"fmt"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// DockerSocket is the API socket of this host's dockerd.
func (h *Host) DockerSocket() string { return h.path("docker.sock") }

// DockerHost is the DOCKER_HOST value for this host.
func (h *Host) DockerHost() string { return "unix://" + h.DockerSocket() }

// dockerCLI prefers Debian's client, which speaks the API of Debian's
// dockerd (a newer client elsewhere on PATH would ask for a newer API).
func dockerCLI() string {
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		return "/usr/bin/docker"
	}
	return "docker"
}

// DockerCommand is the docker command line a user runs against this host.
func (h *Host) DockerCommand() string {
	return fmt.Sprintf("DOCKER_API_VERSION=1.41 %s -H %s", dockerCLI(), h.DockerHost())
}

func (h *Host) startDockerd(ctx context.Context) error {
	subnet, err := h.FlannelSubnet()
	if err != nil {
		return fmt.Errorf("host %s: dockerd needs flannel's subnet: %w", h.Name, err)
	}
	env, _ := h.SubnetEnv()
	d := h.path("docker")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	// An empty config file of our own, so a daemon.json on the machine
	// cannot change the lab's daemons.
	cfg := h.path("docker", "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	argv := inNetns(h.Netns, "dockerd",
		"--config-file", cfg,
		"--data-root", h.path("docker", "data"),
		"--exec-root", h.path("docker", "exec"),
		"--pidfile", h.path("docker", "docker.pid"),
		"-H", h.DockerHost(),
		"--bip", subnet,
		"--mtu", env["FLANNEL_MTU"],
		"--shutdown-timeout", "2",
	)
	if _, err := startDaemon(h.pidfile(Dockerd), h.Log(Dockerd), baseEnv(), argv...); err != nil {
		return fmt.Errorf("host %s: dockerd: %w", h.Name, err)
	}
	if err := h.waitDocker(ctx, 90*time.Second); err != nil {
		return fmt.Errorf("host %s: dockerd: %w", h.Name, err)
	}
	return h.ensureImage(ctx)
}

func (h *Host) waitDocker(ctx context.Context, timeout time.Duration) error {
	sock := h.DockerSocket()
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	defer hc.CloseIdleConnections()
	return poll.Until(ctx, timeout, 100*time.Millisecond, func() error {
		if !h.Running(Dockerd) {
			return fmt.Errorf("dockerd exited (see %s)", h.Log(Dockerd))
		}
		resp, err := hc.Get("http://docker/_ping")
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ping: %s %s", resp.Status, b)
		}
		return nil
	})
}

func (h *Host) ensureImage(ctx context.Context) error {
	if _, err := h.Docker(ctx, "image", "inspect", "--format", "{{.Id}}", Image); err == nil {
		return nil
	}
	if _, err := h.Docker(ctx, "import", "--change", "ENV PATH=/bin", "--change", `CMD ["sh"]`, h.lab.imageTar(), Image); err != nil {
		return fmt.Errorf("host %s: import test image: %w", h.Name, err)
	}
	return nil
}

// Docker runs the docker CLI against this host and returns its trimmed
// combined output.
func (h *Host) Docker(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{dockerCLI(), "-H", h.DockerHost()}, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "DOCKER_API_VERSION=1.41")
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("host %s: docker %s: %w: %s", h.Name, strings.Join(args, " "), err, s)
	}
	return s, nil
}

// CreateNetwork creates a bridge network with the given IPv4 subnet.
func (h *Host) CreateNetwork(ctx context.Context, name, subnet string, extra ...string) error {
	args := append([]string{"network", "create", "--driver", "bridge", "--subnet", subnet}, extra...)
	_, err := h.Docker(ctx, append(args, name)...)
	return err
}

// RemoveNetwork removes a network.
func (h *Host) RemoveNetwork(ctx context.Context, name string) error {
	_, err := h.Docker(ctx, "network", "rm", name)
	return err
}

// RunContainer starts a test container on network and returns its IP on
// that network. The container answers TCP on ProbePort with its socket
// table, so a client learns which source address the receiver saw. It
// restarts with dockerd and stops at once (busybox as PID 1 ignores SIGTERM).
func (h *Host) RunContainer(ctx context.Context, name, network string, extra ...string) (string, error) {
	args := append([]string{"run", "-d", "--name", name, "--network", network,
		"--restart", "unless-stopped", "--stop-timeout", "1"}, extra...)
	args = append(args, Image, "nc", "-ll", "-p", fmt.Sprint(ProbePort), "-e", "netstat", "-tn")
	if _, err := h.Docker(ctx, args...); err != nil {
		return "", err
	}
	return h.ContainerIP(ctx, name, network)
}

// ContainerIP returns the container's address on network.
func (h *Host) ContainerIP(ctx context.Context, name, network string) (string, error) {
	ip, err := h.Docker(ctx, "inspect", "--format",
		fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), name)
	if err != nil {
		return "", err
	}
	if ip == "" {
		return "", fmt.Errorf("host %s: container %s has no address on %s", h.Name, name, network)
	}
	return ip, nil
}

// RemoveContainer removes a container (forcefully).
func (h *Host) RemoveContainer(ctx context.Context, name string) error {
	_, err := h.Docker(ctx, "rm", "-f", name)
	return err
}

// Ping sends one ping from container to ip (1 s timeout).
func (h *Host) Ping(ctx context.Context, container, ip string) error {
	_, err := h.Docker(ctx, "exec", container, "ping", "-c1", "-W1", ip)
	return err
}

// TCPPeers opens a TCP connection from container to ip:ProbePort and returns
// the peer addresses the receiving container's sockets on that port show:
// the source address the receiver really saw (after any NAT on the way).
func (h *Host) TCPPeers(ctx context.Context, container, ip string) ([]string, error) {
	out, err := h.Docker(ctx, "exec", container, "nc", "-w", "2", ip, fmt.Sprint(ProbePort))
	if err != nil {
		return nil, err
	}
	peers := parsePeers(out, ProbePort)
	if len(peers) == 0 {
		return nil, fmt.Errorf("host %s: no connection to %s:%d in the receiver's socket table:\n%s", h.Name, ip, ProbePort, out)
	}
	return peers, nil
}

// parsePeers extracts the foreign addresses of connections whose local port
// is port from `netstat -tn` output.
func parsePeers(netstat string, port int) []string {
	var peers []string
	suffix := fmt.Sprintf(":%d", port)
	for _, line := range strings.Split(netstat, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "tcp" && f[0] != "tcp6" || !strings.HasSuffix(f[3], suffix) {
			continue
		}
		// busybox prints v4-mapped sockets as ::ffff:a.b.c.d:port, unbracketed.
		i := strings.LastIndexByte(f[4], ':')
		if i < 0 {
			continue
		}
		peers = append(peers, strings.TrimPrefix(f[4][:i], "::ffff:"))
	}
	return peers
}
