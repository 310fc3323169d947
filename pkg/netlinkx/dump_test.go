package netlinkx

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestDumpRetriesInterrupted(t *testing.T) {
	h := &Handle{}
	calls := 0
	out, err := dump(h, "test", func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial: must not be returned
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(out) != 2 || calls != 3 || h.DumpRetries() != 2 {
		t.Fatalf("dump = %v, %v after %d calls (%d retries); want [1 2] after 3", out, err, calls, h.DumpRetries())
	}
}

func TestDumpGivesUp(t *testing.T) {
	h := &Handle{}
	calls := 0
	out, err := dump(h, "test", func() ([]int, error) { calls++; return []int{1}, unix.EINTR })
	if err == nil || out != nil || calls != dumpAttempts || !errors.Is(err, unix.EINTR) {
		t.Fatalf("dump = %v, %v after %d calls; want an EINTR error after %d", out, err, calls, dumpAttempts)
	}
	calls = 0
	_, err = dump(h, "test", func() ([]int, error) { calls++; return nil, unix.EPERM })
	if !errors.Is(err, unix.EPERM) || calls != 1 {
		t.Fatalf("dump with EPERM: %v after %d calls; want no retry", err, calls)
	}
}
