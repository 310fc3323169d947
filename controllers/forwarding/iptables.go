package forwarding

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// GoIPTables is the IPTables of the daemon: go-iptables (IPv4) for the
// changes, plus one "iptables -t <table> -S" for a whole-table snapshot,
// which go-iptables does not offer.
type GoIPTables struct {
	*iptables.IPTables
	path string
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
	return &GoIPTables{IPTables: ipt, path: path}, nil
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
