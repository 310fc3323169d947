package privdrop

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

func TestDockerSocketPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", DefaultDockerSocket},
		{"unix:///var/run/docker.sock", "/var/run/docker.sock"},
		{"unix:///run/frlab/h1/docker.sock", "/run/frlab/h1/docker.sock"},
		{"tcp://127.0.0.1:2375", ""},
		{"ssh://user@host", ""},
	} {
		if got := DockerSocketPath(tc.in); got != tc.want {
			t.Errorf("DockerSocketPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// socketIn creates a listening Unix socket in dir, closed when the test ends.
func socketIn(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return p
}

func TestSocketGroup(t *testing.T) {
	testutil.RequireRoot(t) // chown to an arbitrary group
	dir := t.TempDir()
	sock := socketIn(t, dir)
	if err := os.Chown(sock, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o660); err != nil {
		t.Fatal(err)
	}
	g, err := SocketGroup(sock)
	if err != nil || g != 4242 {
		t.Fatalf("SocketGroup = %d, %v; want 4242", g, err)
	}

	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SocketGroup(sock); err == nil || !strings.Contains(err.Error(), "mode 0600") {
		t.Errorf("owner-only socket: err %v, want one naming mode 0600", err)
	}
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o660); err != nil {
		t.Fatal(err)
	}
	if _, err := SocketGroup(file); err == nil || !strings.Contains(err.Error(), "regular file, not a socket") {
		t.Errorf("regular file: err %v", err)
	}
	if _, err := SocketGroup(filepath.Join(dir, "absent.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing socket: err %v, want ErrNotExist", err)
	}
}

func TestPlan(t *testing.T) {
	for _, keep := range [][]cap.Value{{cap.NET_ADMIN}, {cap.NET_ADMIN, cap.NET_RAW}} {
		set, iab, err := Plan(keep)
		if err != nil {
			t.Fatal(err)
		}
		for v := range cap.MaxBits() {
			kept := v == keep[0] || len(keep) > 1 && v == keep[1]
			for _, f := range []cap.Flag{cap.Permitted, cap.Effective, cap.Inheritable} {
				if on, _ := set.GetFlag(f, v); on != kept {
					t.Errorf("keep %v: %s in %s = %v, want %v", keep, v, f, on, kept)
				}
			}
			for _, vec := range []cap.Vector{cap.Inh, cap.Amb} {
				if on, _ := iab.GetVector(vec, v); on != kept {
					t.Errorf("keep %v: %s in IAB %s = %v, want %v", keep, v, vec, on, kept)
				}
			}
			// Bound is the blocked vector: raised means dropped from the bounding set.
			if blocked, _ := iab.GetVector(cap.Bound, v); blocked == kept {
				t.Errorf("keep %v: %s blocked in bounding = %v, want %v", keep, v, blocked, !kept)
			}
		}
	}
	set, _, _ := Plan(Needed)
	if got := set.String(); got != "cap_net_admin,cap_net_raw=eip" {
		t.Errorf("Needed = %q, want cap_net_admin,cap_net_raw=eip", got)
	}
}

func TestErrorIsOneLine(t *testing.T) {
	e := &Error{What: "capability net_admin missing", Why: "add it", Err: errors.New("x")}
	if s := e.Error(); strings.Contains(s, "\n") || !strings.HasPrefix(s, "cannot drop privileges: capability net_admin missing") {
		t.Errorf("Error() = %q", s)
	}
	if !IsError(e) {
		t.Error("IsError(*Error) = false")
	}
}
