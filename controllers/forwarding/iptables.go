package forwarding

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// GoIPTables is the IPTables of the daemon: go-iptables (IPv4) for the
// changes, plus one "iptables -t <table> -S" for a whole-table snapshot and
// "iptables-restore --noflush" for atomic batches, which go-iptables does
// not offer.
type GoIPTables struct {
	*iptables.IPTables
	path, restore string

	mu   sync.Mutex
	pids [16]uint32 // our latest iptables-restore runs (ring), for Ours
	next int
}

// NewIPTables finds iptables on PATH (iptables-nft or -legacy, whichever
// the system chose: the same one Docker uses).
func NewIPTables() (*GoIPTables, error) {
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	path, err := exec.LookPath("iptables")
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	// iptables-restore beside iptables: the same backend (nft or legacy).
	restore := filepath.Join(filepath.Dir(path), filepath.Base(path)+"-restore")
	if _, err := os.Stat(restore); err != nil {
		if restore, err = exec.LookPath("iptables-restore"); err != nil {
			return nil, fmt.Errorf("iptables-restore: %w", err)
		}
	}
	return &GoIPTables{IPTables: ipt, path: path, restore: restore}, nil
}

// Restore applies lines to table in one atomic batch, leaving everything
// else as it is (iptables-restore --noflush; --wait takes the xtables lock
// as iptables and Docker do).
func (g *GoIPTables) Restore(table string, lines []string) error {
	var in strings.Builder
	in.WriteString("*" + table + "\n")
	for _, l := range lines {
		in.WriteString(l + "\n")
	}
	in.WriteString("COMMIT\n")
	var stderr bytes.Buffer
	cmd := exec.Command(g.restore, "--noflush", "--wait")
	cmd.Stdin, cmd.Stderr = strings.NewReader(in.String()), &stderr
	err := cmd.Start()
	if err == nil {
		g.remember(cmd.Process.Pid)
		err = cmd.Wait()
	}
	if err != nil {
		return fmt.Errorf("%s --noflush: %w: %s", g.restore, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (g *GoIPTables) remember(pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pids[g.next] = uint32(pid) //nolint:gosec // a PID fits
	g.next = (g.next + 1) % len(g.pids)
}

// Ours tells whether pid is one of our latest iptables-restore runs: the
// firewall watcher drops the echo of our own batches with it. The kernel
// names the committing process by its PID in the initial PID namespace;
// in a container with a PID namespace of its own the PIDs differ, nothing
// is recognised, and each echo costs one reconcile that writes nothing.
func (g *GoIPTables) Ours(pid uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return pid != 0 && slices.Contains(g.pids[:], pid)
}

// NFTables tells whether iptables is iptables-nft, whose changes the kernel
// announces (nf_tables notifications); iptables-legacy's it does not.
func (g *GoIPTables) NFTables() (bool, error) {
	out, err := exec.Command(g.path, "-V").Output()
	if err != nil {
		return false, fmt.Errorf("%s -V: %w", g.path, err)
	}
	return strings.Contains(string(out), "nf_tables"), nil
}

// ListTable returns "iptables -t table -S" lines.
func (g *GoIPTables) ListTable(table string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(g.path, "-t", table, "-S", "--wait")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -t %s -S: %w: %s", g.path, table, err, strings.TrimSpace(stderr.String()))
	}
	return strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n"), nil
}
