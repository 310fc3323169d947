// Package metrics exports the registrar's state as Prometheus series, every
// one prefixed flannel_registrar_. It does not count anything itself: the
// components already keep counters (the reconcile runners, netlinkx's write
// stats, the controllers' conflict and refusal sets, the prober, the
// recovery guard), and one collector reads them through Source at scrape
// time. That keeps counting out of the business logic and makes a scrape a
// consistent snapshot. A private registry is used so nothing else (no
// global default collectors of a library) leaks into the output.
package metrics

import (
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every series.
const Namespace = "flannel_registrar"

// Controller is one controller's runner counters and queue.
type Controller struct {
	Name                        string
	Reconciles, Changes, Errors uint64
	QueueDepth                  int
}

// Peer is one remote VTEP as the prober sees it.
type Peer struct {
	Host      string // host name when known, else the PublicIP
	PublicIP  string
	Reachable bool
	Probed    bool          // at least one probe answered or timed out
	RTT       time.Duration // last answered probe
}

// Snapshot is everything exported, read at scrape time.
type Snapshot struct {
	Controllers []Controller

	EtcdConnected, DockerConnected, VXLANPresent, Ready bool

	Records, Leases, Hosts  int // what etcd holds, as the store saw it last
	Routes, Neighbours, FDB int // kernel objects we manage on the VXLAN device

	KernelWrites map[string]uint64 // netlink writes by verb, plus "iptables"

	Conflicts int            // subnets not registered or not routed because of a conflicting claim
	Refusals  map[string]int // items refused by the policy, by rule

	InvalidSkipped uint64            // invalid etcd/Docker items skipped since start
	Quarantined    uint64            // values copied under _quarantine and removed since start
	Leftovers      int               // the original tool's keys seen at the last listing
	Recovery       map[string]uint64 // recovery decisions by action (restart, skipped_cooldown, …)

	Peers []Peer

	// GroupDrops are the packets and bytes our DROP rules stopped on their
	// way into each isolation group (iptables counters).
	GroupDrops map[string][2]uint64

	LastResync time.Time // last full resync that listed every key

	// FirewallEvents are the firewall watcher's counts, by kind: reported
	// (a change that queued the forwarding controller), echo (our own
	// iptables-restore batch, dropped), poll (probes run, iptables-legacy).
	FirewallEvents map[string]uint64
}

// Source returns the current snapshot.
type Source func() Snapshot

var (
	descReconciles = desc("reconciles_total", "Reconciles run, by controller.", "controller")
	descChanges    = desc("changes_total", "Changes made by reconciles, by controller.", "controller")
	descErrors     = desc("reconcile_errors_total", "Reconciles that failed (and were retried), by controller.", "controller")
	descQueue      = desc("queue_depth", "Keys waiting in a controller's queue.", "controller")
	descConnected  = desc("connected", "1 when the dependency answers (etcd: the watch is live; docker: the event stream is live).", "dependency")
	descVXLAN      = desc("vxlan_device_present", "1 when the VXLAN device exists.")
	descReady      = desc("ready", "1 when /readyz would answer 200.")
	descEtcdItems  = desc("etcd_items", "Items in etcd as last seen, by kind (records, leases, hosts).", "kind")
	descManaged    = desc("managed_objects", "Kernel objects on the VXLAN device managed by the registrar, by kind (route, neighbour, fdb).", "kind")
	descWrites     = desc("kernel_writes_total", "Kernel write requests sent, by verb.", "verb")
	descConflicts  = desc("conflicts", "Subnets not registered or not routed because of a conflicting claim.")
	descRefusals   = desc("policy_refusals", "Items refused by the trust policy, by rule.", "rule")
	descInvalid    = desc("invalid_items_skipped_total", "Invalid etcd or Docker items skipped.")
	descQuarantine = desc("quarantined_total", "Values copied under _quarantine/ and removed from etcd.")
	descLeftovers  = desc("original_tool_leftovers", "Keys of the original bash tool found under our prefix at the last listing.")
	descFirewall   = desc("firewall_events_total", "iptables changes seen by the firewall watcher, by kind (reported, echo, poll).", "kind")
	descRecovery   = desc("recovery_actions_total", "Recovery decisions, by action (restart, restart_failed, skipped_cooldown, skipped_cap).", "action")
	descPeerUp     = desc("peer_reachable", "1 when the peer's VXLAN device answers probes through the overlay.", "peer", "public_ip")
	descPeerRTT    = desc("peer_rtt_seconds", "Round-trip time of the last answered probe to the peer.", "peer", "public_ip")
	descPeers      = desc("peers", "Remote VTEPs probed, by state (reachable, unreachable, unknown).", "state")
	descLastResync = desc("last_resync_timestamp_seconds", "Unix time of the last full resync that listed every key.")
	descGroupDrops = desc("group_dropped_packets_total", "Packets from the overlay dropped on their way into an isolation group, by group.", "group")
	descGroupBytes = desc("group_dropped_bytes_total", "Bytes from the overlay dropped on their way into an isolation group, by group.", "group")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReconciles, descChanges, descErrors, descQueue, descConnected,
		descVXLAN, descReady, descEtcdItems, descManaged, descWrites, descConflicts, descRefusals, descInvalid,
		descQuarantine, descLeftovers, descRecovery, descPeerUp, descPeerRTT, descPeers, descLastResync, descGroupDrops, descGroupBytes, descFirewall} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src()
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, ct := range s.Controllers {
		counter(descReconciles, float64(ct.Reconciles), ct.Name)
		counter(descChanges, float64(ct.Changes), ct.Name)
		counter(descErrors, float64(ct.Errors), ct.Name)
		gauge(descQueue, float64(ct.QueueDepth), ct.Name)
	}
	gauge(descConnected, b2f(s.EtcdConnected), "etcd")
	gauge(descConnected, b2f(s.DockerConnected), "docker")
	gauge(descVXLAN, b2f(s.VXLANPresent))
	gauge(descReady, b2f(s.Ready))
	gauge(descEtcdItems, float64(s.Records), "records")
	gauge(descEtcdItems, float64(s.Leases), "leases")
	gauge(descEtcdItems, float64(s.Hosts), "hosts")
	gauge(descManaged, float64(s.Routes), "route")
	gauge(descManaged, float64(s.Neighbours), "neighbour")
	gauge(descManaged, float64(s.FDB), "fdb")
	for _, k := range sortedKeys(s.KernelWrites) {
		counter(descWrites, float64(s.KernelWrites[k]), k)
	}
	gauge(descConflicts, float64(s.Conflicts))
	for _, k := range sortedKeys(s.Refusals) {
		gauge(descRefusals, float64(s.Refusals[k]), k)
	}
	counter(descInvalid, float64(s.InvalidSkipped))
	counter(descQuarantine, float64(s.Quarantined))
	gauge(descLeftovers, float64(s.Leftovers))
	for _, k := range sortedKeys(s.Recovery) {
		counter(descRecovery, float64(s.Recovery[k]), k)
	}
	for _, k := range sortedKeys(s.FirewallEvents) {
		counter(descFirewall, float64(s.FirewallEvents[k]), k)
	}
	var up, down, unknown int
	for _, p := range s.Peers {
		switch {
		case !p.Probed:
			unknown++
			continue
		case p.Reachable:
			up++
			gauge(descPeerRTT, p.RTT.Seconds(), p.Host, p.PublicIP)
		default:
			down++
		}
		gauge(descPeerUp, b2f(p.Reachable), p.Host, p.PublicIP)
	}
	gauge(descPeers, float64(up), "reachable")
	gauge(descPeers, float64(down), "unreachable")
	gauge(descPeers, float64(unknown), "unknown")
	if !s.LastResync.IsZero() {
		gauge(descLastResync, float64(s.LastResync.UnixNano())/1e9)
	}
	for _, g := range sortedKeys(s.GroupDrops) {
		counter(descGroupDrops, float64(s.GroupDrops[g][0]), g)
		counter(descGroupBytes, float64(s.GroupDrops[g][1]), g)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NewRegistry returns a private registry holding the registrar's collector
// and the Go runtime and process collectors (memory, goroutines, CPU), all
// under the flannel_registrar_ prefix.
func NewRegistry(src Source) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collector{src: src})
	pr := prometheus.WrapRegistererWithPrefix(Namespace+"_", r)
	pr.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the registry in the Prometheus exposition format.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}
