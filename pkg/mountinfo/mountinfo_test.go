package mountinfo

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/testutil"
)

const sample = `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
40 30 0:30 / /run/frlab rw shared:6 - tmpfs tmpfs rw
41 40 0:31 / /run/frlab/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/x
42 40 0:4 net:[4026532281] /run/frlab/docker/netns/1a2b rw shared:7 - nsfs nsfs rw
43 40 0:32 / /run/frlab/my\040dir rw - tmpfs tmpfs rw
44 40 0:33 / /run/frlab/back\134slash rw master:3 - tmpfs shm rw
45 30 0:34 / /run/frlab-e2e rw - tmpfs tmpfs rw
46 45 0:35 / /run/frlab-e2e/x rw - tmpfs tmpfs rw
47 40 0:36 / /run/frlab rw - tmpfs tmpfs rw
short line
`

func TestParse(t *testing.T) {
	got, err := parse(strings.NewReader(sample), "/run/frlab")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{"/run/frlab/docker/overlay2/abc/merged", "overlay"}, // deepest first
		{"/run/frlab/docker/netns/1a2b", "nsfs"},
		{`/run/frlab/back\slash`, "tmpfs"},
		{"/run/frlab/my dir", "tmpfs"},
		{"/run/frlab", "tmpfs"}, // stacked: the later mount (47) first
		{"/run/frlab", "tmpfs"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parse =\n%v\nwant\n%v", got, want)
	}
}

func TestParseTrailingSlashAndRoot(t *testing.T) {
	got, err := parse(strings.NewReader(sample), "/run/frlab-e2e/")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{{"/run/frlab-e2e/x", "tmpfs"}, {"/run/frlab-e2e", "tmpfs"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parse = %v, want %v", got, want)
	}
	all, err := parse(strings.NewReader(sample), "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 10 || all[len(all)-1].Point != "/" {
		t.Fatalf("parse / = %v", all)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a`:                 "/tmp/a",
		`/tmp/a\040b`:            "/tmp/a b",
		`/run/frlab/a\040b\011c`: "/run/frlab/a b\tc",
		`/tmp/x\134y`:            `/tmp/x\y`,
		`/tmp/end\040`:           "/tmp/end ",
		`/tmp/trailing\`:         `/tmp/trailing\`,
		`/tmp/bad\09x`:           `/tmp/bad\09x`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
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
