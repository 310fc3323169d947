package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/poll"
)

// FlannelContainer is the name of a host's flanneld container (the
// registrar's FLANNEL_CONTAINER_NAME default).
const FlannelContainer = "flannel"

// FlannelImage is the image of the flanneld container: a Debian rootfs
// (flanneld v0.27.4 is linked against glibc and runs iptables) with the
// lab's flanneld binary.
const FlannelImage = "frlab/flannel:latest"

// CacheDir holds what the lab builds once per machine.
const CacheDir = "/var/cache/flannel-registrar-lab"

// RootfsTar returns a Debian bookworm rootfs tarball with iptables, built
// once with mmdebstrap (about 20 s) and cached under CacheDir/images.
func RootfsTar(ctx context.Context) (string, error) {
	// A name of its own: hack/build-image.sh (the registrar image) prunes
	// its own bookworm-iptables*.tar files.
	path := filepath.Join(CacheDir, "images", "lab-flanneld-rootfs-bookworm.tar")
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	// mmdebstrap picks its output format from the name: keep ".tar" last.
	tmp := strings.TrimSuffix(path, ".tar") + ".tmp.tar"
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=essential", "--include=iptables", "--format=tar", "bookworm", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("mmdebstrap (apt package mmdebstrap): %w: %s", err, lastLines(string(out), 5))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	return path, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ensureFlannelImage builds FlannelImage on this host's dockerd: the rootfs
// imported, the flanneld binary copied in, committed.
func (h *Host) ensureFlannelImage(ctx context.Context) error {
	if _, err := h.Docker(ctx, "image", "inspect", "--format", "{{.Id}}", FlannelImage); err == nil {
		return nil
	}
	rootfs, err := RootfsTar(ctx)
	if err != nil {
		return err
	}
	const base = "frlab/bookworm:latest"
	if _, err := h.Docker(ctx, "import", rootfs, base); err != nil {
		return err
	}
	const tmp = "frlab-flannel-build"
	_, _ = h.Docker(ctx, "rm", "-f", tmp)
	if _, err := h.Docker(ctx, "create", "--name", tmp, base, "/usr/local/bin/flanneld"); err != nil {
		return err
	}
	defer func() { _, _ = h.Docker(context.Background(), "rm", "-f", tmp) }()
	if _, err := h.Docker(ctx, "cp", h.lab.FlanneldBinary, tmp+":/usr/local/bin/flanneld"); err != nil {
		return err
	}
	if _, err := h.Docker(ctx, "commit", "--change", `ENTRYPOINT ["/usr/local/bin/flanneld"]`, tmp, FlannelImage); err != nil {
		return err
	}
	return nil
}

// FlanneldToContainer replaces the host's flanneld process by a container
// named FlannelContainer (host network, NET_ADMIN, restarted through the
// Docker API by RECOVERY=flannel) running the same binary with the same
// arguments. The lease and flannel.1 carry over: flanneld keeps its subnet.
func (h *Host) FlanneldToContainer(ctx context.Context) error {
	if err := h.ensureFlannelImage(ctx); err != nil {
		return fmt.Errorf("host %s: flannel image: %w", h.Name, err)
	}
	prev := fileMtime(h.SubnetFile())
	if err := h.Stop(ctx, Flanneld); err != nil {
		return err
	}
	_, _ = h.Docker(ctx, "rm", "-f", FlannelContainer)
	if _, err := h.Docker(ctx, "run", "-d", "--name", FlannelContainer, "--network", "host",
		"--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "-v", h.Dir+":"+h.Dir, FlannelImage,
		"--etcd-endpoints="+h.lab.EtcdEndpointList(), "--etcd-prefix="+FlannelPrefix, "--iface=eth0",
		"--public-ip="+h.IP, "--subnet-file="+h.SubnetFile()); err != nil {
		return err
	}
	return poll.Until(ctx, 60*time.Second, 50*time.Millisecond, func() error {
		if m := fileMtime(h.SubnetFile()); !m.After(prev) {
			return fmt.Errorf("flanneld container has not written %s yet", h.SubnetFile())
		}
		_, err := h.FlannelSubnet()
		return err
	})
}

// FlanneldToProcess removes the flanneld container and starts the lab's
// flanneld process again.
func (h *Host) FlanneldToProcess(ctx context.Context) error {
	if _, err := h.Docker(ctx, "rm", "-f", FlannelContainer); err != nil {
		return err
	}
	return h.Start(ctx, Flanneld)
}

// RestartRegistrar restarts the host's registrar with extra KEY=VALUE
// settings after the lab's (none: the lab's settings).
func (h *Host) RestartRegistrar(ctx context.Context, extraEnv ...string) error {
	if err := h.Stop(ctx, Registrar); err != nil {
		return err
	}
	return h.startRegistrarWith(ctx, extraEnv)
}
