// Package privdrop lets the daemon, started as root (the container's default),
// give up everything it does not need before it does any work (RUN_AS_ROOT=false):
// it joins the group that owns the mounted Docker socket (detected at start,
// as the original tool's entrypoint did), switches to an unprivileged uid, and
// keeps only the capabilities it needs (NET_ADMIN) as permitted, effective,
// inheritable and ambient, so that the iptables it runs has them too. Every
// other capability leaves the bounding set, and no_new_privs is set.
//
// Go's runtime runs on many OS threads, and the kernel applies setuid,
// setgroups, capset and prctl per thread; libcap's cap package (through its
// psx package) applies each of them to all threads at once, which is why it
// is used here instead of raw syscalls.
package privdrop

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// Unprivileged is the uid and primary gid the daemon switches to: the
// conventional nobody/nogroup (65534), which owns no files. The Docker
// socket's group is added as a supplementary group.
const Unprivileged = 65534

// Needed are the capabilities the daemon keeps. NET_ADMIN covers netlink
// writes (routes, neighbours, FDB, ipsets) and iptables-nft, which talks
// netlink too. NET_RAW is for iptables' set match (`-m set`, isolation
// groups): it resolves a set's name over a raw socket and fails with "Can't
// open socket to ipset" without it (seen in the lab as uid 65534).
var Needed = []cap.Value{cap.NET_ADMIN, cap.NET_RAW}

// DefaultDockerSocket is the socket used when DOCKER_HOST is unset.
const DefaultDockerSocket = "/var/run/docker.sock"

// DockerSocketPath returns the Unix socket the Docker client will use for
// dockerHost (the DOCKER_HOST value): its path, DefaultDockerSocket when
// empty, and "" for a non-unix endpoint (tcp://, ssh://), which needs no group.
func DockerSocketPath(dockerHost string) string {
	if dockerHost == "" {
		return DefaultDockerSocket
	}
	u, err := url.Parse(dockerHost)
	if err != nil || u.Scheme != "unix" {
		return ""
	}
	if u.Path != "" {
		return u.Path
	}
	return u.Opaque
}

// SocketGroup returns the group owning the Unix socket at path. It fails
// when the path is no socket, or when the socket's mode gives its group no
// read-write access (then joining the group would not help).
func SocketGroup(path string) (int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("docker socket %s: %w (mount the host's socket there, or set DOCKER_HOST)", path, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return 0, fmt.Errorf("docker socket %s: is a %s, not a socket", path, typeName(st.Mode()))
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("docker socket %s: no owner information", path)
	}
	if st.Mode().Perm()&0o060 != 0o060 {
		return 0, fmt.Errorf("docker socket %s: mode %04o (owner %d:%d) gives its group no read-write access, so an unprivileged process cannot use it (fix the mode, or set RUN_AS_ROOT=true)",
			path, st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	return int(sys.Gid), nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	default:
		return m.Type().String()
	}
}

// Options say what Drop keeps.
type Options struct {
	UID, GID int         // the unprivileged identity; 0 means Unprivileged
	Keep     []cap.Value // capabilities kept; nil means Needed
	// Socket is the Docker socket whose group is joined ("" for none, e.g. a
	// tcp:// DOCKER_HOST).
	Socket string
}

func (o Options) withDefaults() Options {
	if o.UID == 0 {
		o.UID = Unprivileged
	}
	if o.GID == 0 {
		o.GID = Unprivileged
	}
	if o.Keep == nil {
		o.Keep = Needed
	}
	return o
}

// Result describes the process after Drop.
type Result struct {
	UID, GID    int
	Groups      []int
	SocketGroup int    // -1 when no socket group was joined
	Caps        string // the process capability set, libcap text ("cap_net_admin=eip")
	Ambient     string // the IAB tuple (ambient and blocked bounding bits)
	// Dropped is false when the process already ran without uid 0: it was
	// only narrowed to Keep (as under systemd with User= and AmbientCapabilities=).
	Dropped bool
}

// Error is a failed drop: What names the missing piece (a capability, the
// socket's group), Why says what to change. Error() is one line.
type Error struct {
	What, Why string
	Err       error
}

func (e *Error) Error() string {
	s := "cannot drop privileges: " + e.What
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Why != "" {
		s += " (" + e.Why + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Plan computes the target state for keep: the process set (keep as
// permitted, effective and inheritable) and the IAB tuple (keep inheritable
// and ambient; every other capability blocked in the bounding set).
func Plan(keep []cap.Value) (*cap.Set, *cap.IAB, error) {
	set := cap.NewSet()
	for _, f := range []cap.Flag{cap.Permitted, cap.Effective, cap.Inheritable} {
		if err := set.SetFlag(f, true, keep...); err != nil {
			return nil, nil, fmt.Errorf("capability set: %w", err)
		}
	}
	iab := cap.NewIAB()
	if err := iab.SetVector(cap.Inh, true, keep...); err != nil {
		return nil, nil, fmt.Errorf("inheritable vector: %w", err)
	}
	if err := iab.SetVector(cap.Amb, true, keep...); err != nil {
		return nil, nil, fmt.Errorf("ambient vector: %w", err)
	}
	var drop []cap.Value
	for v := range cap.MaxBits() {
		if !slices.Contains(keep, v) {
			drop = append(drop, v)
		}
	}
	if err := iab.SetVector(cap.Bound, true, drop...); err != nil {
		return nil, nil, fmt.Errorf("bounding vector: %w", err)
	}
	return set, iab, nil
}

// Drop makes the process unprivileged as described in the package comment.
// Files the daemon writes later (its health file) must be opened before.
// Started without uid 0 it only narrows the capabilities to Keep and raises
// them as ambient. Any failure is an *Error naming what is missing; the
// process must then exit, as it may be half-way.
func Drop(o Options) (Result, error) {
	o = o.withDefaults()
	have := cap.GetProc()
	for _, c := range o.Keep {
		if ok, _ := have.GetFlag(cap.Permitted, c); !ok {
			return Result{}, &Error{What: "capability " + capName(c) + " missing",
				Why: "the daemon needs it for routes and iptables: add it (compose cap_add: [" + strings.ToUpper(capName(c)) + "], systemd AmbientCapabilities=CAP_" + strings.ToUpper(capName(c)) + ")"}
		}
	}
	socketGroup := -1
	if o.Socket != "" {
		g, err := SocketGroup(o.Socket)
		if err != nil {
			return Result{}, &Error{What: "the Docker socket's group cannot be joined", Err: err}
		}
		socketGroup = g
	}
	set, iab, err := Plan(o.Keep)
	if err != nil {
		return Result{}, &Error{What: "capability plan", Err: err}
	}
	dropped := os.Geteuid() == 0
	if dropped {
		if err := switchUser(o, have, socketGroup); err != nil {
			return Result{}, err
		}
		if err := iab.SetProc(); err != nil {
			return Result{}, &Error{What: "cannot narrow the bounding, inheritable and ambient sets to " + set.String(), Err: err}
		}
	}
	if err := set.SetProc(); err != nil {
		return Result{}, &Error{What: "cannot set capabilities " + set.String(), Err: err}
	}
	if !dropped {
		// The bounding set cannot shrink without SETPCAP; the starter
		// (systemd's CapabilityBoundingSet=) has done that.
		if err := cap.SetAmbient(true, o.Keep...); err != nil {
			return Result{}, &Error{What: "cannot raise ambient " + set.String(), Err: err}
		}
	}
	if _, err := cap.Prctlw(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return Result{}, &Error{What: "cannot set no_new_privs", Err: err}
	}
	if o.Socket != "" {
		// access(2) checks with the new real uid and groups: the proof that
		// the Docker client will get in.
		if err := unix.Access(o.Socket, unix.R_OK|unix.W_OK); err != nil {
			return Result{}, &Error{What: "the Docker socket " + o.Socket + " is not accessible after the switch", Err: err,
				Why: "check its owner and mode, or set RUN_AS_ROOT=true"}
		}
	}
	return current(socketGroup, dropped)
}

func switchUser(o Options, have *cap.Set, socketGroup int) error {
	for _, c := range []cap.Value{cap.SETUID, cap.SETGID, cap.SETPCAP} {
		if ok, _ := have.GetFlag(cap.Permitted, c); !ok {
			return &Error{What: "capability " + capName(c) + " missing to switch from root",
				Why: "Docker grants it by default; keep it (no cap_drop: [ALL]) or set RUN_AS_ROOT=true"}
		}
	}
	var suppl []int
	if socketGroup >= 0 && socketGroup != o.GID {
		suppl = append(suppl, socketGroup)
	}
	if err := cap.SetGroups(o.GID, suppl...); err != nil {
		return &Error{What: fmt.Sprintf("cannot set gid %d and groups %v", o.GID, suppl), Err: err}
	}
	if err := cap.SetUID(o.UID); err != nil {
		return &Error{What: fmt.Sprintf("cannot set uid %d", o.UID), Err: err}
	}
	return nil
}

func current(socketGroup int, dropped bool) (Result, error) {
	groups, err := unix.Getgroups()
	if err != nil {
		return Result{}, &Error{What: "read groups", Err: err}
	}
	return Result{
		UID: os.Getuid(), GID: os.Getgid(), Groups: groups, SocketGroup: socketGroup,
		Caps: cap.GetProc().String(), Ambient: cap.IABGetProc().String(), Dropped: dropped,
	}, nil
}

func capName(c cap.Value) string { return strings.TrimPrefix(c.String(), "cap_") }

// IsError reports whether err is a failed drop.
func IsError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
