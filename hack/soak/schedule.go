package main

import (
	"math/rand/v2"
	"strconv"
)

// Kind is a kind of fault the soak injects.
type Kind string

// The fault kinds, in the order the table lists them.
const (
	RegistrarKill   Kind = "registrar SIGKILL"
	FlanneldRestart Kind = "flanneld restart"
	DockerdRestart  Kind = "dockerd restart"
	EtcdMemberKill  Kind = "etcd member kill"
	EtcdPause       Kind = "etcd paused 20s"
	VXLANDeleted    Kind = "flannel.1 deleted"
	GarbageKey      Kind = "garbage key"
	KernelEntries   Kind = "routes/neigh/fdb deleted"
	FirewallJump    Kind = "iptables jump deleted"
)

// AllKinds lists every fault kind.
var AllKinds = []Kind{
	RegistrarKill, FlanneldRestart, DockerdRestart, EtcdMemberKill, EtcdPause,
	VXLANDeleted, GarbageKey, KernelEntries, FirewallJump,
}

// Fault is one fault to inject: its kind, the host it acts on (1-based)
// and, for an etcd member kill, the member (1-based).
type Fault struct {
	Kind   Kind
	Host   int
	Peer   int // KernelEntries: the peer whose entries are deleted on Host
	Member int
}

// ObservedHost is never given a registrar SIGKILL: its registrar runs the
// whole soak, so its RSS and goroutine count can be compared between the
// two halves (a killed registrar starts small again).
const ObservedHost = 1

// Schedule yields faults in rounds: each round is a seeded random
// permutation of every kind, so a run of any length spreads its faults over
// all kinds, and two schedules with one seed yield the same faults (the
// soak's two halves run the same sequence, to compare growth fairly).
type Schedule struct {
	rng     *rand.Rand
	hosts   int
	members int
	queue   []Fault
}

// NewSchedule returns the schedule for seed on a lab of hosts hosts
// (at least 2) and members etcd members.
func NewSchedule(seed uint64, hosts, members int) *Schedule {
	return &Schedule{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), hosts: hosts, members: max(members, 1)}
}

// Next returns the next fault.
func (s *Schedule) Next() Fault {
	if len(s.queue) == 0 {
		for _, i := range s.rng.Perm(len(AllKinds)) {
			s.queue = append(s.queue, s.fault(AllKinds[i]))
		}
	}
	f := s.queue[0]
	s.queue = s.queue[1:]
	return f
}

func (s *Schedule) fault(k Kind) Fault {
	f := Fault{Kind: k, Host: 1 + s.rng.IntN(s.hosts)}
	switch k {
	case RegistrarKill:
		for f.Host == ObservedHost {
			f.Host = 1 + s.rng.IntN(s.hosts)
		}
	case KernelEntries:
		f.Peer = 1 + s.rng.IntN(s.hosts-1)
		if f.Peer >= f.Host {
			f.Peer++
		}
	case EtcdMemberKill:
		f.Host = 0
		f.Member = 1 + s.rng.IntN(s.members)
	case EtcdPause, GarbageKey:
		f.Host = 0
	}
	return f
}

// String names the fault for the progress log.
func (f Fault) String() string {
	s := string(f.Kind)
	switch {
	case f.Kind == KernelEntries:
		s += " on h" + strconv.Itoa(f.Host) + " (peer h" + strconv.Itoa(f.Peer) + ")"
	case f.Member > 0:
		s += " (member " + strconv.Itoa(f.Member) + ")"
	case f.Host > 0:
		s += " on h" + strconv.Itoa(f.Host)
	}
	return s
}
