// Package mounts lists and removes the mounts below a directory. Test
// harnesses and the lab use it to sweep what a killed dockerd leaves behind
// (overlay, shm and netns mounts). The mount table is read with
// github.com/moby/sys/mountinfo, the library moby itself uses for this.
package mounts

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
)

// Mount is one mount point and its filesystem type (e.g. "nsfs", "overlay").
type Mount struct {
	Point, FSType string
}

// Under lists the mounts at or below dir, deepest (and, at equal depth,
// latest) first, so that unmounting in order never hits a busy parent.
func Under(dir string) ([]Mount, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Clean(dir)))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	ms := make([]Mount, 0, len(infos))
	for _, i := range infos {
		ms = append(ms, Mount{Point: i.Mountpoint, FSType: i.FSType})
	}
	return deepestFirst(ms), nil
}

// deepestFirst orders mounts listed in mount order (parents before children,
// stacked mounts oldest first) for unmounting.
func deepestFirst(ms []Mount) []Mount {
	slices.Reverse(ms)
	slices.SortStableFunc(ms, func(a, b Mount) int {
		return strings.Count(b.Point, "/") - strings.Count(a.Point, "/")
	})
	return ms
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
