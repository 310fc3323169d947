package registry

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-registrar/flannel-registrar/pkg/flannel"
)

// Identity is what a registrar publishes about its host. Two registrars
// configured with the same host name (cloned VMs) differ in it.
type Identity struct {
	PublicIP netip.Addr
	VtepMAC  net.HardwareAddr
}

// Known says whether id can tell our entries from a duplicate registrar's.
func (id Identity) Known() bool { return id.PublicIP.IsValid() }

// DuplicateHost describes another registrar that uses this host's name: its
// entries are never deleted or overwritten by us.
type DuplicateHost struct {
	Host     string
	PublicIP string
	VtepMAC  string
	Key      string // where it was seen
}

// IsZero says whether d describes nothing.
func (d DuplicateHost) IsZero() bool { return d == DuplicateHost{} }

func (d DuplicateHost) String() string {
	return fmt.Sprintf("another registrar uses host name %s with PublicIP %s, VtepMAC %s (%s)", d.Host, d.PublicIP, d.VtepMAC, d.Key)
}

// DuplicateHostError is returned by PutHost when the host record of this
// host's name belongs to another registrar.
type DuplicateHostError struct{ DuplicateHost }

func (e *DuplicateHostError) Error() string { return e.String() + "; its host record was left alone" }

// liveOthers are the other registrars of this host's name that are alive
// now, by PublicIP: the host record and the liveness markers (see
// Keys.Registrar) of this name that sit on a lease other than our current
// host liveness lease. Both are on short liveness leases, so a registrar
// that stopped drops out within HostLivenessTTL.
type liveOthers map[string]DuplicateHost

// hostRead is one read of the liveness keys of this host's name.
type hostRead struct {
	host    *mvccpb.KeyValue   // the host record, nil when absent
	markers []*mvccpb.KeyValue // liveness markers
}

// hostOps reads the liveness keys; readHost parses their responses.
func (r *Registry) hostOps() []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(r.cfg.Keys.Host(r.cfg.Host)),
		clientv3.OpGet(r.cfg.Keys.Registrars(r.cfg.Host), clientv3.WithPrefix()),
	}
}

func readHost(host, markers *etcdserverpb.RangeResponse) hostRead {
	return hostRead{host: first(host.Kvs), markers: markers.Kvs}
}

// hostGuards make a decision based on hr hold at commit: the host record and
// the markers unchanged (a marker that expired in between only makes us
// more careful).
func (r *Registry) hostGuards(rev int64) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(r.cfg.Keys.Host(r.cfg.Host)), "<", rev+1),
		clientv3.Compare(clientv3.ModRevision(r.cfg.Keys.Registrars(r.cfg.Host)), "<", rev+1).WithPrefix(),
	}
}

func (r *Registry) live(hr hostRead, curHost clientv3.LeaseID) liveOthers {
	out := liveOthers{}
	add := func(kv *mvccpb.KeyValue) {
		if kv == nil || (curHost != 0 && clientv3.LeaseID(kv.Lease) == curHost) {
			return
		}
		h, err := DecodeHost(kv.Value)
		if err != nil || h.PublicIP == "" {
			return
		}
		if _, ok := out[h.PublicIP]; !ok {
			out[h.PublicIP] = DuplicateHost{Host: r.cfg.Host, PublicIP: h.PublicIP, VtepMAC: h.VtepMAC, Key: string(kv.Key)}
		}
	}
	add(hr.host)
	for _, kv := range hr.markers {
		add(kv)
	}
	return out
}

// ours says whether the host record is on our current liveness lease: then
// it tells others we are alive and no marker is needed.
func (hr hostRead) ours(curHost clientv3.LeaseID) bool {
	return hr.host != nil && curHost != 0 && clientv3.LeaseID(hr.host.Lease) == curHost
}

// marked says whether a marker of ip is on our current liveness lease.
func (r *Registry) marked(hr hostRead, ip netip.Addr, curHost clientv3.LeaseID) bool {
	key := r.cfg.Keys.Registrar(r.cfg.Host, ip)
	for _, kv := range hr.markers {
		if string(kv.Key) == key && curHost != 0 && clientv3.LeaseID(kv.Lease) == curHost {
			return true
		}
	}
	return false
}

// foreignIdentity says whether an entry of this host's name carrying
// publicIP, on etcd lease, belongs to another registrar: one that is alive
// (live) with that PublicIP. An entry with another PublicIP and no live
// registrar behind it is ours, left by our previous life (a restart with a
// new PublicIP): it is re-attached, overwritten or deleted. After a restart
// that recreated the VXLAN device (new MAC) our old records carry our
// PublicIP and are ours too. Entries on our current lease are ours whatever
// they carry.
func foreignIdentity(publicIP string, lease, cur clientv3.LeaseID, id Identity, live liveOthers) bool {
	if !id.Known() || (cur != 0 && lease == cur) {
		return false
	}
	ip, err := netip.ParseAddr(publicIP)
	if err != nil || ip == id.PublicIP {
		return false
	}
	_, alive := live[ip.String()]
	return alive
}

// duplicateOf returns the duplicate registrar a record of this host's name
// (kv) belongs to; ok is false when the record is ours (or unparsable, which
// we manage as ours).
func (r *Registry) duplicateOf(kv *mvccpb.KeyValue, cur clientv3.LeaseID, id Identity, live liveOthers) (DuplicateHost, bool) {
	var rec NetworkRecord
	if kv == nil || json.Unmarshal(kv.Value, &rec) != nil {
		return DuplicateHost{}, false
	}
	if !foreignIdentity(rec.PublicIP, clientv3.LeaseID(kv.Lease), cur, id, live) {
		return DuplicateHost{}, false
	}
	return DuplicateHost{Host: r.cfg.Host, PublicIP: rec.PublicIP, VtepMAC: rec.VtepMAC, Key: string(kv.Key)}, true
}

// hostView is one read of this host name's records: which leases belong to a
// duplicate registrar. Records and reservations share a lease, so a
// reservation of this host's name on such a lease is the duplicate's too.
type hostView struct {
	records map[string]*mvccpb.KeyValue
	live    liveOthers
	foreign map[clientv3.LeaseID]DuplicateHost
	dups    []DuplicateHost // every record of a duplicate registrar
}

func (r *Registry) viewHost(kvs []*mvccpb.KeyValue, cur clientv3.LeaseID, id Identity, live liveOthers) hostView {
	v := hostView{records: map[string]*mvccpb.KeyValue{}, live: live, foreign: map[clientv3.LeaseID]DuplicateHost{}}
	for _, kv := range kvs {
		v.records[string(kv.Key)] = kv
		d, ok := r.duplicateOf(kv, cur, id, live)
		if !ok {
			continue
		}
		v.dups = append(v.dups, d)
		if kv.Lease != 0 {
			v.foreign[clientv3.LeaseID(kv.Lease)] = d
		}
	}
	return v
}

// foreignReservation says whether kv (a reservation of this host's name)
// sits on a duplicate registrar's lease.
func (v hostView) foreignReservation(kv *mvccpb.KeyValue) (DuplicateHost, bool) {
	if kv == nil || kv.Lease == 0 {
		return DuplicateHost{}, false
	}
	d, ok := v.foreign[clientv3.LeaseID(kv.Lease)]
	return d, ok
}

// subnetEntry is one key under <FLANNEL_PREFIX>/subnets; prefix is its IPv4
// subnet (also of a dual-stack key, "10.5.35.0-24&fd00::-64").
type subnetEntry struct {
	prefix netip.Prefix
	kv     *mvccpb.KeyValue
}

// plain says whether e is at the key we write for its subnet
// ("10.5.35.0-24"), not at a dual-stack key of the same IPv4 subnet.
func (r *Registry) plain(e subnetEntry) bool { return string(e.kv.Key) == r.cfg.Keys.Subnet(e.prefix) }

func (r *Registry) subnetEntries(kvs []*mvccpb.KeyValue) []subnetEntry {
	out := make([]subnetEntry, 0, len(kvs))
	for _, kv := range kvs {
		p, err := flannel.ParseSubnetKey(string(kv.Key[len(r.cfg.Keys.Subnets()):]))
		if err == nil {
			out = append(out, subnetEntry{prefix: p, kv: kv})
		}
	}
	return out
}

// overlapping returns the first entry that overlaps subnet, other than the
// reservation key of subnet itself, and is held by someone else, with the
// claimant in words. A dual-stack lease key of the same IPv4 subnet is
// judged like the reservation key (claimant: anything but our own
// reservation of network is a conflict). Otherwise entries of this host
// itself do not count: our reservations (not on a duplicate's lease) and
// leases carrying our PublicIP (this host's flanneld). Unparsable values
// claim nothing.
func (r *Registry) overlapping(entries []subnetEntry, subnet netip.Prefix, network string, id Identity, hv hostView) (subnetEntry, string, bool) {
	for _, e := range entries {
		if !e.prefix.Overlaps(subnet) || (e.prefix == subnet && r.plain(e)) {
			continue
		}
		if e.prefix == subnet {
			if claimant, ok := r.claimant(e.kv, network, hv); !ok {
				return e, claimant, true
			}
			continue
		}
		l, err := flannel.Decode(e.kv.Value)
		if err != nil {
			continue
		}
		if d, err := l.Reservation(); err == nil {
			if dup, foreign := hv.foreignReservation(e.kv); foreign {
				return e, fmt.Sprintf("%s network %s", dup, d.Network), true
			}
			if d.Host == r.cfg.Host {
				continue
			}
			return e, fmt.Sprintf("host %s network %s", d.Host, d.Network), true
		}
		if l.BackendType == flannel.BackendReservation {
			return e, "an invalid reservation", true
		}
		if id.Known() && l.PublicIP == id.PublicIP.String() {
			continue
		}
		return e, fmt.Sprintf("a flannel %s lease of PublicIP %s", l.BackendType, l.PublicIP), true
	}
	return subnetEntry{}, "", false
}

// What the original bash tool (1.x, register-docker-networks.sh) wrote at
// <FLANNEL_PREFIX>/subnets/<subnet> for each of its host's Docker networks,
// with a plain etcdctl put (no etcd lease): from 1.2.0-alpha on, flannel's
// lease format with a hard-coded VNI 1 and the MAC of flannel.1 ("unknown"
// when the device was missing); before, a format of its own naming the host.
const (
	legacyFormat       = `{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}`
	legacyOldFormatPre = `{"PublicIP":"%s","backend":{"type":"vxlan","vtepMAC":"`
	legacyOldFormatSuf = `"},"hostname":"%s"}`
	legacyNoMAC        = "unknown"
)

// legacyLease says whether kv, at the reservation key of one of this host's
// Docker networks, is a lease the original tool left there. Such a lease is
// quarantined and replaced by our reservation. A flannel reservation (a
// lease of flanneld's whose TTL an operator removed, as flannel documents)
// is byte for byte what the original wrote, so the value alone proves
// nothing; kv is the original's only when, besides having no etcd lease:
//
//   - it is the original's pre-1.2 format naming this host (hostname,
//     this host's PublicIP), which flanneld never writes; or
//   - it is the 1.2 format with this host's PublicIP and VtepMAC
//     "unknown", which flanneld never writes; or
//   - it is the 1.2 format with this host's PublicIP and VtepMAC, and this
//     host's flanneld holds another lease (vxlan, this PublicIP and VtepMAC,
//     at another key): flanneld has one subnet per host, so this one is not
//     flanneld's own subnet nor its reservation.
//
// Anything else (another VNI, IPv6 data, other fields or spacing, another
// PublicIP or VtepMAC, an etcd lease) is not what the original wrote.
func (r *Registry) legacyLease(kv *mvccpb.KeyValue, id Identity, entries []subnetEntry) bool {
	if kv == nil || kv.Lease != 0 || !id.Known() {
		return false
	}
	ip, v := id.PublicIP.String(), string(kv.Value)
	if mac, ok := strings.CutPrefix(v, fmt.Sprintf(legacyOldFormatPre, ip)); ok {
		mac, ok = strings.CutSuffix(mac, fmt.Sprintf(legacyOldFormatSuf, r.cfg.Host))
		if _, err := net.ParseMAC(mac); ok && (err == nil || mac == legacyNoMAC) {
			return true
		}
		return false
	}
	switch v {
	case fmt.Sprintf(legacyFormat, ip, legacyNoMAC):
		return true
	case fmt.Sprintf(legacyFormat, ip, id.VtepMAC.String()):
		return len(id.VtepMAC) == 6 && r.flanneldLeaseElsewhere(string(kv.Key), id, entries)
	}
	return false
}

// flanneldLeaseElsewhere says whether an entry other than key is this host's
// flanneld lease: vxlan, with this host's PublicIP and VtepMAC.
func (r *Registry) flanneldLeaseElsewhere(key string, id Identity, entries []subnetEntry) bool {
	for _, e := range entries {
		if string(e.kv.Key) == key {
			continue
		}
		l, err := flannel.Decode(e.kv.Value)
		if err != nil || l.PublicIP != id.PublicIP.String() {
			continue
		}
		if _, mac, err := l.VXLAN(); err == nil && mac.String() == id.VtepMAC.String() {
			return true
		}
	}
	return false
}

// QuarantineKey is where a removed value of key is copied:
// <ConfigPrefix>/_quarantine/<key without its leading slash>.
func (k Keys) QuarantineKey(key string) string {
	if len(key) > 0 && key[0] == '/' {
		key = key[1:]
	}
	return k.ConfigPrefix + "/" + QuarantineDir + "/" + key
}

// duplicates returns one DuplicateHost per duplicate registrar (PublicIP),
// sorted.
func (v hostView) duplicates() []DuplicateHost {
	seen := map[string]DuplicateHost{}
	for _, d := range v.dups {
		if cur, ok := seen[d.PublicIP]; !ok || d.Key < cur.Key {
			seen[d.PublicIP] = d
		}
	}
	out := make([]DuplicateHost, 0, len(seen))
	for _, d := range seen {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b DuplicateHost) int { return strings.Compare(a.PublicIP, b.PublicIP) })
	return out
}
