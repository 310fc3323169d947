package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const modulePath = "github.com/flannel-registrar/flannel-registrar"

// FlanneldCacheDir is where hack/install-deps.sh installs flanneld.
const FlanneldCacheDir = "/var/cache/flannel-registrar-lab/bin"

// FindFlanneld locates a flanneld binary: $FLANNELD, the install-deps cache,
// flanneld or flannel on PATH, then $GOPATH/bin/flannel.
func FindFlanneld() (string, error) {
	cands := []string{os.Getenv("FLANNELD"), filepath.Join(FlanneldCacheDir, "flannel")}
	for _, n := range []string{"flanneld", "flannel"} {
		if p, err := exec.LookPath(n); err == nil {
			cands = append(cands, p)
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, "go", "bin", "flannel"))
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", errors.New("flanneld not found (run hack/install-deps.sh, or set FLANNELD=/path/to/flanneld)")
}

// FindRepoRoot walks up from the working directory to this module's go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == modulePath
		}
	}
	return false
}

func findGo() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// goBuild builds pkg (relative to the repo root, e.g. ./hack/labetcd) to out.
func (l *Lab) goBuild(ctx context.Context, pkg, out string) error {
	// -buildvcs=false: under sudo, git refuses a clone owned by the user
	// ("dubious ownership") and VCS stamping would fail the build.
	cmd := exec.CommandContext(ctx, l.GoBinary, "build", "-buildvcs=false", "-o", out, pkg)
	cmd.Dir = l.RepoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func (l *Lab) etcdBinary() string { return l.path("bin", "labetcd") }

// RegistrarPath is the flannel-registrar binary the lab runs.
func (l *Lab) RegistrarPath() string {
	if l.RegistrarBinary != "" {
		return l.RegistrarBinary
	}
	return l.path("bin", "flannel-registrar")
}

// buildBinaries builds the lab's etcd and, unless a prebuilt one is given,
// flannel-registrar from the working tree.
func (l *Lab) buildBinaries(ctx context.Context) error {
	l.progress("building hack/labetcd")
	if err := l.goBuild(ctx, "./hack/labetcd", l.etcdBinary()); err != nil {
		return err
	}
	if l.Registrar && l.RegistrarBinary == "" {
		l.progress("building cmd/flannel-registrar")
		if err := l.goBuild(ctx, "./cmd/flannel-registrar", l.RegistrarPath()); err != nil {
			return err
		}
	}
	return nil
}

// RebuildRegistrar rebuilds the registrar binary from the working tree (the
// running daemons keep the old one until restarted).
func (l *Lab) RebuildRegistrar(ctx context.Context) error {
	if l.RegistrarBinary != "" {
		return fmt.Errorf("registrar binary is prebuilt (%s)", l.RegistrarBinary)
	}
	return l.goBuild(ctx, "./cmd/flannel-registrar", l.RegistrarPath())
}
