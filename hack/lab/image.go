package lab

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

func (l *Lab) imageTar() string { return l.path("image", "busybox.tar") }

// FindBusybox locates a statically linked busybox (Debian's busybox-static):
// the test image has no libc, so a dynamic one would not run in it.
func FindBusybox() (string, error) {
	cands := []string{os.Getenv("BUSYBOX"), "/bin/busybox", "/usr/bin/busybox"}
	if p, err := exec.LookPath("busybox"); err == nil {
		cands = append(cands, p)
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if static, err := isStatic(c); err == nil && static {
			return c, nil
		}
	}
	return "", errors.New("no statically linked busybox found (apt-get install busybox-static)")
}

func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// buildImageTar writes a rootfs tarball with busybox and a symlink per
// applet, for `docker import` (there is no image registry here).
func (l *Lab) buildImageTar(ctx context.Context) error {
	bb, err := FindBusybox()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bb, err)
	}
	if err := os.MkdirAll(l.path("image"), 0o755); err != nil {
		return fmt.Errorf("image dir: %w", err)
	}
	f, err := os.Create(l.imageTar())
	if err != nil {
		return fmt.Errorf("create image tar: %w", err)
	}
	defer f.Close()
	if err := writeRootfs(f, bb, strings.Fields(string(out))); err != nil {
		return fmt.Errorf("image tar: %w", err)
	}
	return f.Close()
}

func writeRootfs(w io.Writer, busybox string, applets []string) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, d := range []string{"bin/", "dev/", "etc/", "proc/", "root/", "sys/", "tmp/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: now}); err != nil {
			return err
		}
	}
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		h := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(passwd); err != nil {
		return err
	}
	return tw.Close()
}
