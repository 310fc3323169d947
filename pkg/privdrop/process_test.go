package privdrop

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// The real-process tests re-execute this test binary inside a throwaway
// network namespace (nsenter --net). The child, still root, calls Drop and
// then tries what the daemon does (a route, iptables) and what it must not
// be able to do (chown a root file), and reports as JSON on stdout.
const helperEnv = "PRIVDROP_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

type report struct {
	Result    Result
	Status    map[string]string // /proc/self/status lines of interest
	RouteErr  string
	IptS      string
	IptSErr   string
	IptNErr   string
	ChownErr  string
	ChownPerm bool // the chown failed with EPERM
}

func helper() int {
	res, err := Drop(Options{Socket: os.Getenv("PRIVDROP_SOCKET")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	r := report{Result: res, Status: status()}
	_, dst, _ := net.ParseCIDR("203.0.113.0/24")
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
	}
	if err != nil {
		r.RouteErr = err.Error()
	}
	out, err := exec.Command("iptables", "-S").CombinedOutput()
	r.IptS = string(out)
	if err != nil {
		r.IptSErr = err.Error() + ": " + string(out)
	}
	if out, err := exec.Command("iptables", "-N", "FRTEST-PRIVDROP").CombinedOutput(); err != nil {
		r.IptNErr = err.Error() + ": " + string(out)
	}
	if err := os.Chown(os.Getenv("PRIVDROP_ROOTFILE"), Unprivileged, Unprivileged); err != nil {
		r.ChownErr = err.Error()
		r.ChownPerm = errors.Is(err, syscall.EPERM)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 4
	}
	return 0
}

func status() map[string]string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && (strings.HasPrefix(k, "Cap") || k == "NoNewPrivs" || k == "Groups" || k == "Uid" || k == "Gid") {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// fixture is a world-traversable directory with a Docker-like socket owned
// by root:<group> and a root-owned file.
type fixture struct {
	dir, socket, rootFile string
}

func newFixture(t *testing.T, group int, mode os.FileMode) fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "privdrop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// The dropped child needs search permission to reach the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := fixture{dir: dir, socket: socketIn(t, dir), rootFile: filepath.Join(dir, "root-owned")}
	if err := os.Chown(f.socket, 0, group); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.socket, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.rootFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// runHelper runs the helper in ns, optionally under a prefix command
// (setpriv), and returns its stdout, stderr and exit code.
func runHelper(t *testing.T, ns *testutil.Netns, f fixture, prefix ...string) (report, string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"--net=" + ns.Path, "--"}, prefix...)
	argv = append(argv, self, "-test.run=^$")
	cmd := exec.Command("nsenter", argv...)
	cmd.Env = append(os.Environ(), helperEnv+"=1", "PRIVDROP_SOCKET="+f.socket, "PRIVDROP_ROOTFILE="+f.rootFile)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run helper: %v", err)
	}
	var r report
	if code == 0 {
		if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
			t.Fatalf("helper output %q: %v (stderr %s)", stdout.String(), err, stderr.String())
		}
	}
	return r, stderr.String(), code
}

func TestDropRealProcess(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "iptables")
	ns := testutil.NewNetns(t, "privdrop")
	f := newFixture(t, 4242, 0o660)
	r, stderr, code := runHelper(t, ns, f)
	if code != 0 {
		t.Fatalf("helper exited %d: %s", code, stderr)
	}
	t.Logf("dropped: %+v status %v", r.Result, r.Status)

	if uid := strings.Fields(r.Status["Uid"]); len(uid) != 4 || slices.ContainsFunc(uid, func(s string) bool { return s != strconv.Itoa(Unprivileged) }) {
		t.Errorf("Uid (real, effective, saved, fs) = %q, want all %d", r.Status["Uid"], Unprivileged)
	}
	if !slices.Contains(strings.Fields(r.Status["Groups"]), "4242") {
		t.Errorf("Groups = %q, want the socket's group 4242", r.Status["Groups"])
	}
	const needed = "0000000000003000" // NET_ADMIN (bit 12) and NET_RAW (bit 13)
	for _, k := range []string{"CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"} {
		if r.Status[k] != needed {
			t.Errorf("%s = %s, want %s (NET_ADMIN and NET_RAW only)", k, r.Status[k], needed)
		}
	}
	if r.Status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", r.Status["NoNewPrivs"])
	}
	if r.Result.SocketGroup != 4242 || !r.Result.Dropped {
		t.Errorf("result %+v: want socket group 4242, dropped", r.Result)
	}

	// What the daemon must still do, checked from outside.
	if r.RouteErr != "" {
		t.Errorf("route add as the dropped process: %s", r.RouteErr)
	}
	routes, err := ns.Handle.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(rt netlink.Route) bool { return rt.Dst != nil && rt.Dst.String() == "203.0.113.0/24" }) {
		t.Errorf("route 203.0.113.0/24 not in the namespace: %v", routes)
	}
	if r.IptSErr != "" || !strings.Contains(r.IptS, "-P FORWARD") {
		t.Errorf("iptables -S as the dropped process: %q %s", r.IptS, r.IptSErr)
	}
	if r.IptNErr != "" {
		t.Errorf("iptables -N as the dropped process: %s", r.IptNErr)
	}
	if out := ns.Run(t, "iptables", "-S"); !strings.Contains(out, "-N FRTEST-PRIVDROP") {
		t.Errorf("chain made by the dropped process missing:\n%s", out)
	}
	// And what needs another capability (CHOWN) must fail.
	if !r.ChownPerm {
		t.Errorf("chown of a root file: err %q, want EPERM", r.ChownErr)
	}
	st, err := os.Stat(f.rootFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("root file now owned by %d", st.Sys().(*syscall.Stat_t).Uid)
	}
}

// A socket whose group has no access, or a missing NET_ADMIN: one line
// naming what and why, non-zero exit, nothing done.
func TestDropRefuses(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "privdrop")
	t.Run("socket group has no access", func(t *testing.T) {
		f := newFixture(t, 4242, 0o600)
		_, stderr, code := runHelper(t, ns, f)
		if code == 0 {
			t.Fatal("helper succeeded with a 0600 socket")
		}
		line := strings.TrimSpace(stderr)
		if strings.Contains(line, "\n") || !strings.Contains(line, "the Docker socket's group cannot be joined") || !strings.Contains(line, "mode 0600") {
			t.Errorf("stderr %q: want one line naming the socket's group and mode", stderr)
		}
	})
	t.Run("NET_ADMIN missing", func(t *testing.T) {
		setpriv := testutil.RequireBinary(t, "setpriv")
		f := newFixture(t, 4242, 0o660)
		_, stderr, code := runHelper(t, ns, f, setpriv, "--bounding-set=-net_admin", "--inh-caps=-net_admin")
		if code == 0 {
			t.Fatal("helper succeeded without NET_ADMIN")
		}
		line := strings.TrimSpace(stderr)
		if strings.Contains(line, "\n") || !strings.Contains(line, "capability net_admin missing") || !strings.Contains(line, "cap_add: [NET_ADMIN]") {
			t.Errorf("stderr %q: want one line naming NET_ADMIN and how to add it", stderr)
		}
	})
}
