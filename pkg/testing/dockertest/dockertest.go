// Package dockertest starts a real dockerd inside a throwaway network
// namespace for tests, as design.md §7 describes:
//
//	nsenter --net=/var/run/netns/NS dockerd --data-root D/data --exec-root D/exec \
//	    -H unix://D/docker.sock --pidfile D/docker.pid
//
// D is a short directory under /tmp (unix socket paths are limited to 107
// bytes). Everything the daemon creates — its processes (dockerd, its
// containerd, shims, containers), mounts under D, its cgroups and D itself —
// is removed when the test ends, also when it fails. Docker's iptables rules,
// bridges and sysctls live in the namespace, so nothing reaches the root
// namespace.
package dockertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// Image is the name of the busybox image ImportBusybox creates.
const Image = "frtest/busybox"

// Default address ranges, inside the benchmark range 198.18.0.0/15 so that
// no test address can collide with the machine's own networks.
const (
	DefaultBIP  = "198.19.255.1/24"
	DefaultPool = "base=198.19.0.0/17,size=24"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

// Daemon is a running (or stopped) dockerd in a test namespace. Its methods
// must be called from the test's goroutine (they fail the test on error).
type Daemon struct {
	Dir  string // D
	NS   *testutil.Netns
	t    testing.TB
	args []string
	proc *process
}

type config struct {
	args []string
}

// Option changes how the daemon is started.
type Option func(*config)

// WithArgs appends extra dockerd arguments (e.g. "--iptables=false").
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Start starts dockerd in ns and waits until it answers. Cleanup is
// registered before anything is created.
func Start(t testing.TB, ns *testutil.Netns, opts ...Option) *Daemon {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "dockerd")
	testutil.RequireBinary(t, "nsenter")
	testutil.RequireBinary(t, "iptables")
	var c config
	for _, o := range opts {
		o(&c)
	}
	dir, err := os.MkdirTemp("/tmp", shortPrefix(ns.Name))
	if err != nil {
		t.Fatalf("dockertest: temp dir: %v", err)
	}
	d := &Daemon{Dir: dir, NS: ns, t: t}
	t.Cleanup(d.cleanup)
	// Searchable like /var/run: a registrar that dropped to an unprivileged
	// uid reaches the socket through its group, as in production.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	d.args = append(d.baseArgs(), c.args...)
	d.start()
	return d
}

// shortPrefix keeps D short: the namespace name tells whose daemon it is.
func shortPrefix(ns string) string {
	if len(ns) > 20 {
		ns = ns[:20]
	}
	return ns + "-"
}

func (d *Daemon) baseArgs() []string {
	return []string{
		"--net=" + d.NS.Path, "dockerd",
		// An own config file: never read the machine's /etc/docker/daemon.json.
		"--config-file", d.path("daemon.json"),
		"--data-root", d.path("data"),
		"--exec-root", d.path("exec"),
		"-H", d.Host(),
		"--pidfile", d.path("docker.pid"),
		// Containers in cgroups of their own, so cleanup can find them.
		"--cgroup-parent", "/" + filepath.Base(d.Dir),
		"--containerd-namespace", filepath.Base(d.Dir),
		"--containerd-plugins-namespace", filepath.Base(d.Dir) + "-plugins",
		"--bip", DefaultBIP,
		"--default-address-pool", DefaultPool,
		"--shutdown-timeout", "2",
	}
}

func (d *Daemon) path(name string) string { return filepath.Join(d.Dir, name) }

// Host is the daemon's address for DOCKER_HOST, "unix:///tmp/…/docker.sock".
func (d *Daemon) Host() string { return "unix://" + d.path("docker.sock") }

// Running says whether the dockerd process is alive.
func (d *Daemon) Running() bool { return d.proc != nil && !d.proc.exited() }

// Client returns a client of this daemon (closed when the test ends).
func (d *Daemon) Client() *client.Client {
	d.t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost(d.Host()), client.WithAPIVersionNegotiation())
	if err != nil {
		d.t.Fatalf("dockertest: client: %v", err)
	}
	d.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops dockerd (SIGTERM, then SIGKILL) and waits for it to exit.
func (d *Daemon) Stop() {
	d.t.Helper()
	if err := d.stop(); err != nil {
		d.t.Fatalf("dockertest: stop: %v", err)
	}
}

// Restart stops dockerd and starts it again on the same directories.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}

// StartAgain starts a stopped daemon again.
func (d *Daemon) StartAgain() {
	d.t.Helper()
	if d.Running() {
		d.t.Fatalf("dockertest: daemon already running")
	}
	d.start()
}

func (d *Daemon) start() {
	d.t.Helper()
	_ = os.Remove(d.path("docker.sock"))
	p, err := startProcess(d.path("dockerd.log"), "nsenter", d.args...)
	if err != nil {
		d.t.Fatalf("dockertest: start dockerd: %v", err)
	}
	d.proc = p
	if err := d.waitReady(); err != nil {
		d.t.Fatalf("dockertest: dockerd in %s not ready: %v\n%s", d.NS.Name, err, d.LogTail(40))
	}
}

func (d *Daemon) waitReady() error {
	return testutil.Poll(startTimeout, func() error {
		if d.proc.exited() {
			if d.proc.err == nil {
				return errors.New("dockerd exited with status 0")
			}
			return fmt.Errorf("dockerd exited: %w", d.proc.err)
		}
		_, err := d.TryDocker("version", "--format", "{{.Server.Version}}")
		return err
	})
}

func (d *Daemon) stop() error {
	if d.proc == nil || d.proc.exited() {
		return nil
	}
	_ = d.proc.cmd.Process.Signal(syscall.SIGTERM)
	if d.proc.wait(stopTimeout) {
		return nil
	}
	_ = d.proc.cmd.Process.Kill()
	if !d.proc.wait(stopTimeout) {
		return fmt.Errorf("dockerd (pid %d) did not exit after SIGKILL", d.proc.cmd.Process.Pid)
	}
	return nil
}

// Docker runs the docker CLI against this daemon and returns its stdout
// (trimmed); a failure fails the test.
func (d *Daemon) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.TryDocker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// TryDocker is Docker without failing the test; the error includes stderr.
func (d *Daemon) TryDocker(args ...string) (string, error) {
	return d.dockerStdin(nil, args...)
}

func (d *Daemon) dockerStdin(stdin []byte, args ...string) (string, error) {
	bin, env := cli()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), append(env,
		"DOCKER_HOST="+d.Host(),
		"DOCKER_CONFIG="+d.path("cli"), // never the user's config or credential helpers
		"DOCKER_CONTEXT=",
	)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// cli picks Debian's docker CLI (it speaks the daemon's API 1.41); another
// docker on PATH is pinned to API 1.41.
func cli() (string, []string) {
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		return "/usr/bin/docker", nil
	}
	if p, err := exec.LookPath("docker"); err == nil {
		return p, []string{"DOCKER_API_VERSION=1.41"}
	}
	return "docker", nil
}

// LogTail returns the last n lines of dockerd's log.
func (d *Daemon) LogTail(n int) string {
	b, err := os.ReadFile(d.path("dockerd.log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process is a started command whose exit is awaited by one goroutine.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
	log  *os.File
}

func startProcess(logPath, name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal to the test never reaches it directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) wait(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// ErrDuplicatesRefused is returned by CreateDuplicateNetwork when the daemon
// does not allow two networks with one name (dockerd 25 and later).
var ErrDuplicatesRefused = errors.New("dockerd refuses duplicate network names")

// CreateDuplicateNetwork creates a bridge network through the API with
// CheckDuplicate false (API 1.41), which dockerd before 25 honours even when
// a network of that name exists (the CLI and the Go client always ask for
// the check). extra is merged into the request body (e.g. "Internal": true).
// It returns the new network's ID.
func (d *Daemon) CreateDuplicateNetwork(t testing.TB, name, subnet string, extra map[string]any) (string, error) {
	t.Helper()
	body := map[string]any{
		"Name": name, "Driver": "bridge", "CheckDuplicate": false,
		"IPAM": map[string]any{"Config": []map[string]string{{"Subnet": subnet}}},
	}
	for k, v := range extra {
		body[k] = v
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.path("docker.sock"))
	}}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://docker/v1.41/networks/create", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("dockertest: create network %s: %v", name, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusConflict:
		return "", fmt.Errorf("%w: %s", ErrDuplicatesRefused, strings.TrimSpace(string(out)))
	case resp.StatusCode != http.StatusCreated:
		t.Fatalf("dockertest: create network %s: %s: %s", name, resp.Status, out)
	}
	var r struct {
		ID string `json:"Id"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.ID == "" {
		t.Fatalf("dockertest: create network %s: response %s: %v", name, out, err)
	}
	return r.ID, nil
}
