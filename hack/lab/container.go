package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// The registrar as a container (Options.RegistrarContainer, labctl up
// --container): on every host, the image `make image` builds, started with
// the repo's docker-compose.yml by Debian's docker-compose against the
// host's dockerd, so network_mode: host is the host's namespace. Only the
// etcd endpoint, the host name and the Docker socket path are overridden.
const (
	RegistrarImage         = "flannel-registrar:latest" // docker-compose.yml's default image
	RegistrarContainerName = "flannel-registrar"        // docker-compose.yml's container_name
	composeProject         = "frlab"
)

// RegistrarImageTar is the image tarball the lab loads into every host's
// dockerd: Options.RegistrarImageTar, else one built into the state dir.
func (l *Lab) RegistrarImageTar() string {
	if l.RegistrarImageFile != "" {
		return l.RegistrarImageFile
	}
	return l.path("image", "flannel-registrar-image.tar")
}

// BuildRegistrarImage runs hack/build-image.sh (what `make image` runs)
// with its tarball in the state dir, unless a prebuilt one is given.
func (l *Lab) BuildRegistrarImage(ctx context.Context) error {
	if l.RegistrarImageFile != "" {
		if _, err := os.Stat(l.RegistrarImageFile); err != nil {
			return fmt.Errorf("registrar image: %w", err)
		}
		return nil
	}
	l.progress("building the registrar image (hack/build-image.sh)")
	if err := os.MkdirAll(filepath.Dir(l.RegistrarImageTar()), 0o755); err != nil {
		return fmt.Errorf("image dir: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(l.RepoRoot, "hack", "build-image.sh"))
	cmd.Dir = l.RepoRoot
	cmd.Env = append(os.Environ(), "IMAGE_TAR="+l.RegistrarImageTar(), "GO="+l.GoBinary)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build-image.sh: %w\n%s", err, out)
	}
	l.progress("%s", strings.TrimSpace(lastLine(string(out))))
	return nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// ComposeFile is the repo's docker-compose.yml.
func (l *Lab) ComposeFile() string { return filepath.Join(l.RepoRoot, "docker-compose.yml") }

// ComposeEnv is what a user on this host would export before
// `docker-compose up -d`: the lab overrides (etcd endpoint, host name,
// socket path, and ALLOWED_SUBNETS: the lab's networks are in the benchmark
// range, which the policy's default does not allow), and DOCKER_HOST so the
// compose client talks to this host's dockerd.
func (h *Host) ComposeEnv() []string {
	return []string{
		"DOCKER_HOST=" + h.DockerHost(),
		"DOCKER_SOCKET=" + h.DockerSocket(),
		"ETCD_ENDPOINT=" + h.lab.EtcdEndpointList(),
		"HOST_NAME=" + h.Name,
		"ALLOWED_SUBNETS=" + AllowedSubnets,
	}
}

// Compose runs docker-compose on the repo's compose file against this host.
func (h *Host) Compose(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"-f", h.lab.ComposeFile(), "-p", composeProject}, args...)
	cmd := exec.CommandContext(ctx, "docker-compose", argv...)
	cmd.Env = append(baseEnv(), h.ComposeEnv()...)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("host %s: docker-compose %s: %w: %s", h.Name, strings.Join(args, " "), err, s)
	}
	return s, nil
}

// ContainerState is the registrar container's docker inspect .State.
type ContainerState struct {
	Status    string
	Running   bool
	Pid       int
	ExitCode  int
	StartedAt time.Time
	Health    *struct {
		Status string
	}
}

// HealthStatus is the health check's status ("" without one).
func (s ContainerState) HealthStatus() string {
	if s.Health == nil {
		return ""
	}
	return s.Health.Status
}

// RegistrarContainerState inspects the registrar container.
func (h *Host) RegistrarContainerState(ctx context.Context) (ContainerState, error) {
	out, err := h.Docker(ctx, "inspect", "--format", "{{json .State}}", RegistrarContainerName)
	if err != nil {
		return ContainerState{}, err
	}
	var s ContainerState
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return ContainerState{}, fmt.Errorf("host %s: inspect %s: %w", h.Name, RegistrarContainerName, err)
	}
	return s, nil
}

// LoadRegistrarImage loads the image tarball into this host's dockerd.
func (h *Host) LoadRegistrarImage(ctx context.Context) error {
	if _, err := h.Docker(ctx, "load", "-i", h.lab.RegistrarImageTar()); err != nil {
		return fmt.Errorf("host %s: load registrar image: %w", h.Name, err)
	}
	return nil
}

// StartRegistrarContainer loads the image and runs `docker-compose up -d`;
// it returns once the container runs (not yet healthy: see WaitHealthy).
func (h *Host) StartRegistrarContainer(ctx context.Context) error {
	if err := h.LoadRegistrarImage(ctx); err != nil {
		return err
	}
	if _, err := h.Compose(ctx, "up", "-d"); err != nil {
		return err
	}
	return poll.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		s, err := h.RegistrarContainerState(ctx)
		if err != nil {
			return err
		}
		if !s.Running {
			return fmt.Errorf("host %s: registrar container %s (exit code %d)", h.Name, s.Status, s.ExitCode)
		}
		return nil
	})
}

// WaitRegistrarHealthy waits until docker reports the container healthy.
func (h *Host) WaitRegistrarHealthy(ctx context.Context, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 200*time.Millisecond, func() error {
		s, err := h.RegistrarContainerState(ctx)
		if err != nil {
			return err
		}
		if st := s.HealthStatus(); st != "healthy" {
			return fmt.Errorf("host %s: registrar container is %q (running %v)", h.Name, st, s.Running)
		}
		return nil
	})
}

// RemoveRegistrarContainer runs `docker-compose down` (stop and remove).
func (h *Host) RemoveRegistrarContainer(ctx context.Context) error {
	_, err := h.Compose(ctx, "down")
	return err
}

// RegistrarLogs returns the container's log (stdout and stderr).
func (h *Host) RegistrarLogs(ctx context.Context) (string, error) {
	return h.Docker(ctx, "logs", RegistrarContainerName)
}

// registrarContainerPid is the container's main process, or 0.
func (h *Host) registrarContainerPid() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.RegistrarContainerState(ctx)
	if err != nil || !s.Running {
		return 0
	}
	return s.Pid
}
