package status

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sample() Report {
	return Report{
		Host:      "node-1",
		Generated: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		Hosts: []Host{
			{Name: "node-1", PublicIP: "198.51.100.11", VtepMAC: "02:42:c6:33:64:0b", Version: "1.4.0", Alive: true,
				Networks: []string{"app1", "db"}, Reach: "self", Recovery: "restart=1"},
			{Name: "node-2", PublicIP: "198.51.100.12", VtepMAC: "02:42:c6:33:64:0c", Version: "1.4.0", Alive: true,
				Networks: []string{"app2"}, Reach: "reachable", RTTMillis: 0.42},
			{Name: "a-very-long-host-name-that-does-not-fit", PublicIP: "198.51.100.13", VtepMAC: "02:42:c6:33:64:0d",
				Version: "1.3.9-dirty-with-a-long-suffix", Networks: []string{"app3"}, Reach: "unreachable"},
			{Name: "198.51.100.14", PublicIP: "198.51.100.14", VtepMAC: "02:42:c6:33:64:0e", Reach: "unknown"},
		},
		Networks: []Network{
			{Host: "node-1", Name: "app1", Subnet: "10.5.35.0/24", Group: "frontend", State: StateLocal},
			{Host: "node-1", Name: "db", Subnet: "10.5.36.0/24", State: StateLocal},
			{Host: "node-2", Name: "app2", Subnet: "10.5.40.0/24", State: StateRouted},
			{Host: "a-very-long-host-name-that-does-not-fit", Name: "app3", Subnet: "10.5.40.0/25", State: StateConflict, Detail: "overlaps 10.5.40.0/24 of node-2"},
			{Host: "node-2", Name: "evil", Subnet: "198.51.100.0/24", State: StateRefused, Detail: "underlay: overlaps this host's underlay 198.51.100.0/24 (connected route on ul0)"},
		},
		Conflicts: []Conflict{{Subnet: "10.5.40.0/25", Reason: "overlaps 10.5.40.0/24", Claimants: []string{"node-2", "a-very-long-host-name-that-does-not-fit"}}},
		Quarantined: []Quarantined{{Key: "/flannel/network/subnets/_quarantine/coreos.com/network/subnets/10.5.50.0-24",
			Value: `{"PublicIP":"127.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}`}},
		Leftovers: []Leftover{{Kind: "network-text", Key: "/flannel/network/subnets/node-3/app9", Host: "node-3"}, {Kind: "exists", Key: "/flannel/network/_exists"}},
		Local: Local{VXLAN: "flannel.1 mac 02:42:c6:33:64:0b local 198.51.100.11 mtu 1450 up", Desired: 1, InSync: false,
			Diffs:    []string{"route 10.5.40.0/24 via 10.5.40.0 dev flannel.1 onlink: missing"},
			Recovery: "flannel: 1 restart in 24h, last 2026-12-01T09:50:00Z"},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/status -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the output (go test ./pkg/status -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestTableGolden(t *testing.T) {
	var b bytes.Buffer
	if err := Table(&b, sample()); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", b.Bytes())
	for i, line := range strings.Split(b.String(), "\n") {
		if n := utf8.RuneCountInString(line); n > Width {
			t.Errorf("line %d is %d columns wide (max %d): %q", i+1, n, Width, line)
		}
	}
}

func TestJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := JSON(&b, sample()); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.json", b.Bytes())
}

func TestEmptyReport(t *testing.T) {
	var b bytes.Buffer
	if err := Table(&b, Report{Host: "h", Local: Local{VXLAN: "missing", InSync: true}}); err != nil {
		t.Fatal(err)
	}
	golden(t, "empty.txt", b.Bytes())
}
