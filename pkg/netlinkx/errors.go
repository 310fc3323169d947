package netlinkx

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IsNotFound says whether err means the object (route, neighbour, FDB entry,
// link) does not exist. A delete that fails this way is done.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	switch {
	case err == nil:
		return false
	case errors.As(err, &lnf):
		return true
	}
	for _, e := range []error{unix.ESRCH, unix.ENOENT, unix.ENODEV, unix.ENXIO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// IsExist says whether err is EEXIST. Callers should not see it: this
// package only uses replace/set verbs; it exists for callers that add
// objects through other means.
func IsExist(err error) bool { return errors.Is(err, unix.EEXIST) }

// retryableDump says whether a dump that failed with err is worth repeating
// at once: the kernel interrupted it (tables changed while dumping) or the
// syscall was interrupted.
func retryableDump(err error) bool {
	return errors.Is(err, netlink.ErrDumpInterrupted) || errors.Is(err, unix.EINTR) ||
		errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY)
}

// dumpAttempts bounds how often an interrupted dump is repeated; the kernel
// interrupts a dump only when the table changed during it, so a few tries
// succeed unless something rewrites the table continuously.
const dumpAttempts = 5

// dump runs fn until it returns a complete result. A partial result is never
// returned: deciding deletions from it would remove live entries.
func dump[T any](h *Handle, what string, fn func() ([]T, error)) ([]T, error) {
	var err error
	for i := range dumpAttempts {
		if i > 0 {
			h.redump.Add(1)
		}
		var out []T
		out, err = fn()
		if err == nil {
			return out, nil
		}
		if !retryableDump(err) {
			return nil, fmt.Errorf("dump %s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("dump %s: interrupted %d times: %w", what, dumpAttempts, err)
}
