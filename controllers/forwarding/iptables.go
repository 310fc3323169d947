package forwarding

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// GoIPTables is the IPTables of the daemon: go-iptables (IPv4) for the
// changes, plus one "iptables -t <table> -S" for a whole-table snapshot and
// "iptables-restore --noflush" for atomic batches, which go-iptables does
// not offer.
type GoIPTables struct {
	*iptables.IPTables
	path, restore string
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
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s --noflush: %w: %s", g.restore, err, strings.TrimSpace(stderr.String()))
	}
	return nil
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
