package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func sample() Snapshot {
	return Snapshot{
		Controllers:     []Controller{{Name: "routes", Reconciles: 7, Changes: 3, Errors: 1, QueueDepth: 2}},
		EtcdConnected:   true,
		DockerConnected: false,
		VXLANPresent:    true,
		Records:         4, Leases: 3, Hosts: 2,
		Routes: 5, Neighbours: 5, FDB: 2,
		KernelWrites:   map[string]uint64{"route_replace": 9, "iptables": 1},
		Conflicts:      1,
		Refusals:       map[string]int{"underlay": 2},
		InvalidSkipped: 3,
		Quarantined:    1,
		Leftovers:      4,
		Recovery:       map[string]uint64{"restart": 1, "skipped_cooldown": 2},
		Peers: []Peer{
			{Host: "b", PublicIP: "198.51.100.2", Reachable: true, Probed: true, RTT: 1500 * time.Microsecond},
			{Host: "c", PublicIP: "198.51.100.3", Probed: true},
			{Host: "d", PublicIP: "198.51.100.4"},
		},
		LastResync:     time.Unix(1700000000, 0),
		GroupDrops:     map[string][2]uint64{"blue": {12, 1008}},
		FirewallEvents: map[string]uint64{"reported": 3, "echo": 5},
	}
}

func TestSeriesNamesAndLabels(t *testing.T) {
	r := NewRegistry(func() Snapshot { return sample() })
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), Namespace+"_") {
			t.Errorf("series %s lacks the %s_ prefix", mf.GetName(), Namespace)
		}
		names[mf.GetName()] = true
	}
	for _, want := range []string{
		"reconciles_total", "changes_total", "reconcile_errors_total", "queue_depth", "connected",
		"vxlan_device_present", "ready", "etcd_items", "managed_objects", "kernel_writes_total", "conflicts",
		"policy_refusals", "invalid_items_skipped_total", "quarantined_total", "original_tool_leftovers",
		"recovery_actions_total", "peer_reachable", "peer_rtt_seconds", "peers", "last_resync_timestamp_seconds",
		"group_dropped_packets_total", "group_dropped_bytes_total", "firewall_events_total",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !names[Namespace+"_"+want] {
			t.Errorf("series %s_%s missing", Namespace, want)
		}
	}
}

func TestValues(t *testing.T) {
	r := NewRegistry(func() Snapshot { return sample() })
	want := `
# HELP flannel_registrar_peer_reachable 1 when the peer's VXLAN device answers probes through the overlay.
# TYPE flannel_registrar_peer_reachable gauge
flannel_registrar_peer_reachable{peer="b",public_ip="198.51.100.2"} 1
flannel_registrar_peer_reachable{peer="c",public_ip="198.51.100.3"} 0
# HELP flannel_registrar_peers Remote VTEPs probed, by state (reachable, unreachable, unknown).
# TYPE flannel_registrar_peers gauge
flannel_registrar_peers{state="reachable"} 1
flannel_registrar_peers{state="unknown"} 1
flannel_registrar_peers{state="unreachable"} 1
# HELP flannel_registrar_connected 1 when the dependency answers (etcd: the watch is live; docker: the event stream is live).
# TYPE flannel_registrar_connected gauge
flannel_registrar_connected{dependency="docker"} 0
flannel_registrar_connected{dependency="etcd"} 1
# HELP flannel_registrar_recovery_actions_total Recovery decisions, by action (restart, restart_failed, skipped_cooldown, skipped_cap).
# TYPE flannel_registrar_recovery_actions_total counter
flannel_registrar_recovery_actions_total{action="restart"} 1
flannel_registrar_recovery_actions_total{action="skipped_cooldown"} 2
# HELP flannel_registrar_reconciles_total Reconciles run, by controller.
# TYPE flannel_registrar_reconciles_total counter
flannel_registrar_reconciles_total{controller="routes"} 7
# HELP flannel_registrar_policy_refusals Items refused by the trust policy, by rule.
# TYPE flannel_registrar_policy_refusals gauge
flannel_registrar_policy_refusals{rule="underlay"} 2
# HELP flannel_registrar_group_dropped_packets_total Packets from the overlay dropped on their way into an isolation group, by group.
# TYPE flannel_registrar_group_dropped_packets_total counter
flannel_registrar_group_dropped_packets_total{group="blue"} 12
# HELP flannel_registrar_firewall_events_total iptables changes seen by the firewall watcher, by kind (reported, echo, poll).
# TYPE flannel_registrar_firewall_events_total counter
flannel_registrar_firewall_events_total{kind="echo"} 5
flannel_registrar_firewall_events_total{kind="reported"} 3
`
	if err := testutil.GatherAndCompare(r, strings.NewReader(want),
		Namespace+"_peer_reachable", Namespace+"_peers", Namespace+"_connected",
		Namespace+"_recovery_actions_total", Namespace+"_reconciles_total", Namespace+"_policy_refusals",
		Namespace+"_group_dropped_packets_total", Namespace+"_firewall_events_total"); err != nil {
		t.Fatal(err)
	}
}

// The handler serves the text format over HTTP.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(NewRegistry(func() Snapshot { return sample() })))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `flannel_registrar_kernel_writes_total{verb="route_replace"} 9`) {
		t.Fatalf("body lacks the route_replace counter:\n%s", body)
	}
}
