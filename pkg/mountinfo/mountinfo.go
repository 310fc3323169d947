// Package mountinfo lists and removes the mounts below a directory, read
// from /proc/self/mountinfo. Test harnesses and the lab use it to sweep what
// a killed dockerd leaves behind (overlay, shm and netns mounts).
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Mount is one mount point and its filesystem type (e.g. "nsfs", "overlay").
type Mount struct {
	Point, FSType string
}

// Under lists the mounts at or below dir, deepest (and, at equal depth,
// latest) first, so that unmounting in order never hits a busy parent.
func Under(dir string) ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	return parse(f, dir)
}

// UnmountUnder lazily unmounts (MNT_DETACH) every mount at or below dir,
// deepest first. Mounts may be stacked, so it repeats a few rounds; a mount
// that vanished meanwhile (EINVAL, ENOENT) is not an error. It fails if
// anything is still mounted at the end.
func UnmountUnder(dir string) error {
	var errs []error
	for range 5 {
		ms, err := Under(dir)
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			return nil
		}
		errs = errs[:0] // only the last round's failures matter
		for _, m := range ms {
			err := syscall.Unmount(m.Point, syscall.MNT_DETACH)
			if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("umount %s: %w", m.Point, err))
			}
		}
	}
	if ms, _ := Under(dir); len(ms) > 0 {
		errs = append(errs, fmt.Errorf("still mounted under %s: %v", dir, ms))
	}
	return errors.Join(errs...)
}

// parse reads mountinfo lines from r (see proc_pid_mountinfo(5)): field 5
// is the mount point, the field after the "-" separator the fstype.
func parse(r io.Reader, dir string) ([]Mount, error) {
	dir = filepath.Clean(dir)
	var ms []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		point := unescape(fields[4])
		if !under(point, dir) {
			continue
		}
		m := Mount{Point: point}
		if i := slices.Index(fields[5:], "-"); i >= 0 && 5+i+1 < len(fields) {
			m.FSType = fields[5+i+1]
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	slices.Reverse(ms)
	slices.SortStableFunc(ms, func(a, b Mount) int {
		return strings.Count(b.Point, "/") - strings.Count(a.Point, "/")
	})
	return ms, nil
}

// under reports whether p is dir or below it (/run/frlab-e2e is not below
// /run/frlab).
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// unescape decodes mountinfo's octal escapes (\040 for a space, \134 for a
// backslash); a backslash not followed by three octal digits stays.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
