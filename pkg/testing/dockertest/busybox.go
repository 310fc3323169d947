package dockertest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// busyboxPaths are where Debian's busybox-static puts its binary.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// ImportBusybox creates the image frtest/busybox (Image) with `docker
// import` of a root filesystem holding the static busybox and a symlink per
// applet: there is no image registry on the test machines.
func (d *Daemon) ImportBusybox(t testing.TB) {
	t.Helper()
	bin, err := staticBusybox()
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("dockertest: %v", err)
		}
		t.Skipf("dockertest: %v (install busybox-static)", err)
	}
	rootfs, err := busyboxTar(bin)
	if err != nil {
		t.Fatalf("dockertest: busybox rootfs: %v", err)
	}
	if _, err := d.dockerStdin(rootfs, "import", "-", Image); err != nil {
		t.Fatalf("docker import %s: %v", Image, err)
	}
}

// staticBusybox finds a statically linked busybox (a dynamic one cannot run
// in an image without libc).
func staticBusybox() (string, error) {
	for _, p := range busyboxPaths {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := false
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		_ = f.Close() // opened read-only: nothing written could be lost
		if !dynamic {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox in %v", busyboxPaths)
}

func busyboxTar(bin string) ([]byte, error) {
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, dir := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "root/", "var/", "run/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(body)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(body); err != nil {
		return nil, err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		h := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
	}
	for name, content := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: now}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
