package mounts

import (
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

func TestDeepestFirst(t *testing.T) {
	// Mount order as the kernel lists it: parents first, stacked mounts
	// oldest first.
	in := []Mount{
		{"/run/frlab", "tmpfs"},
		{"/run/frlab/docker/overlay2/abc/merged", "overlay"},
		{"/run/frlab/docker/netns/1a2b", "nsfs"},
		{"/run/frlab/my dir", "tmpfs"},
		{"/run/frlab/back", "shm"},
		{"/run/frlab", "ramfs"},
	}
	want := []Mount{
		{"/run/frlab/docker/overlay2/abc/merged", "overlay"}, // deepest first
		{"/run/frlab/docker/netns/1a2b", "nsfs"},
		{"/run/frlab/back", "shm"}, // at equal depth, the later mount first
		{"/run/frlab/my dir", "tmpfs"},
		{"/run/frlab", "ramfs"}, // stacked: the later mount first
		{"/run/frlab", "tmpfs"},
	}
	if got := deepestFirst(in); !reflect.DeepEqual(got, want) {
		t.Fatalf("deepestFirst =\n%v\nwant\n%v", got, want)
	}
}

// TestUnderIsPathPrefix: /run/frlab-e2e is not below /run/frlab.
func TestUnderIsPathPrefix(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	dir, sibling := filepath.Join(base, "lab"), filepath.Join(base, "lab-e2e")
	for _, d := range []string{dir, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount %s: %v", d, err)
		}
		t.Cleanup(func() { _ = UnmountUnder(d) })
	}
	ms, err := Under(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ms, []Mount{{dir, "tmpfs"}}) {
		t.Fatalf("Under(%s) = %v", dir, ms)
	}
}

// TestUnmountUnder mounts nested, stacked and oddly named tmpfs mounts in a
// temp dir (root mount namespace) and checks they are all found and removed.
func TestUnmountUnder(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { _ = UnmountUnder(dir) })
	points := []string{"a", "a/b", "a", "sp ace"}
	for _, p := range points {
		mp := filepath.Join(dir, p)
		if err := os.MkdirAll(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount %s: %v", mp, err)
		}
		if p == "a" {
			_ = os.MkdirAll(filepath.Join(mp, "b"), 0o755) // for a/b and in the top mount of a
		}
	}
	ms, err := Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(points) || ms[0].Point != filepath.Join(dir, "a/b") || ms[0].FSType != "tmpfs" {
		t.Fatalf("Under = %v", ms)
	}
	if !reflect.DeepEqual(ms[1], Mount{filepath.Join(dir, "sp ace"), "tmpfs"}) {
		t.Fatalf("latest mount not first at its depth: %v", ms)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if ms, err := Under(dir); err != nil || len(ms) > 0 {
		t.Fatalf("after UnmountUnder: %v, %v", ms, err)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatalf("second UnmountUnder: %v", err)
	}
}
