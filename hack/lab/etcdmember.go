package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Per-member faults of the lab's etcd cluster. Members are numbered from 1.

func (l *Lab) checkMember(i int) error {
	if i < 1 || i > l.EtcdMembers {
		return fmt.Errorf("etcd member %d: the lab has members 1..%d", i, l.EtcdMembers)
	}
	return nil
}

// KillEtcdMember kills member i with SIGKILL and waits until it is gone.
func (l *Lab) KillEtcdMember(ctx context.Context, i int) error {
	if err := l.checkMember(i); err != nil {
		return err
	}
	return l.etcdPidfile(i).stop(ctx, 0)
}

// StopEtcdMember stops member i gracefully (SIGTERM; a leader hands its
// leadership over first).
func (l *Lab) StopEtcdMember(ctx context.Context, i int) error {
	if err := l.checkMember(i); err != nil {
		return err
	}
	return l.etcdPidfile(i).stop(ctx, 15*time.Second)
}

// StartEtcdMember starts member i on its data directory (it rejoins the
// cluster) and waits until it reports healthy, which needs a quorum.
func (l *Lab) StartEtcdMember(ctx context.Context, i int) error {
	if err := l.checkMember(i); err != nil {
		return err
	}
	if !l.EtcdMemberRunning(i) {
		if err := l.launchEtcdMember(i); err != nil {
			return err
		}
	}
	return l.waitEtcdMember(ctx, i, time.Minute)
}

// partitionRules drop everything member i sends or receives on the
// underlay: clients and peers see a silent member (packets vanish, no
// reset), like a host whose network went away. The unix socket stays
// usable for lab tooling.
var partitionRules = [][]string{
	{"INPUT", "-i", "eth0", "-j", "DROP"},
	{"OUTPUT", "-o", "eth0", "-j", "DROP"},
}

// PartitionEtcdMember cuts member i off the underlay (iptables in its
// namespace). It is idempotent.
func (l *Lab) PartitionEtcdMember(ctx context.Context, i int) error {
	if err := l.checkMember(i); err != nil {
		return err
	}
	for _, r := range partitionRules {
		if l.memberRule(ctx, i, "-C", r) == nil {
			continue
		}
		if err := l.memberRule(ctx, i, "-I", r); err != nil {
			return fmt.Errorf("partition etcd member %d: %w", i, err)
		}
	}
	return nil
}

// HealEtcdMember removes the partition of member i. It is idempotent.
func (l *Lab) HealEtcdMember(ctx context.Context, i int) error {
	if err := l.checkMember(i); err != nil {
		return err
	}
	var errs []error
	for _, r := range partitionRules {
		for l.memberRule(ctx, i, "-C", r) == nil {
			if err := l.memberRule(ctx, i, "-D", r); err != nil {
				errs = append(errs, fmt.Errorf("heal etcd member %d: %w", i, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// EtcdMemberPartitioned reports whether member i is partitioned.
func (l *Lab) EtcdMemberPartitioned(ctx context.Context, i int) bool {
	return l.checkMember(i) == nil && l.memberRule(ctx, i, "-C", partitionRules[0]) == nil
}

func (l *Lab) memberRule(ctx context.Context, i int, op string, rule []string) error {
	argv := append([]string{"iptables", "-w", op, rule[0]}, rule[1:]...)
	_, err := run(ctx, inNetns(l.EtcdMemberNetns(i), argv...)...)
	return err
}

// EtcdLeader returns the member that leads the cluster, as seen by a
// majority of the members (asked through their unix sockets, so a
// partitioned member answers too; it does not count a stale view of its
// own).
func (l *Lab) EtcdLeader(ctx context.Context) (int, error) {
	ids := map[uint64]int{} // member ID -> index
	votes := map[uint64]int{}
	var errs []error
	for i := 1; i <= l.EtcdMembers; i++ {
		if !l.EtcdMemberRunning(i) {
			errs = append(errs, fmt.Errorf("member %d: not running", i))
			continue
		}
		id, leader, err := l.memberStatus(ctx, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("member %d: %w", i, err))
			continue
		}
		ids[id] = i
		if leader != 0 {
			votes[leader]++
		}
	}
	for id, n := range votes {
		if idx, ok := ids[id]; ok && n > l.EtcdMembers/2 {
			return idx, nil
		}
	}
	var seen []string
	for id, n := range votes {
		seen = append(seen, fmt.Sprintf("%x:%d", id, n))
	}
	return 0, fmt.Errorf("no etcd leader seen by a majority (votes %s): %w", strings.Join(seen, " "), errors.Join(errs...))
}

func (l *Lab) memberStatus(ctx context.Context, i int) (id, leader uint64, err error) {
	ep := "unix://" + l.EtcdMemberSocket(i)
	cli, err := newEtcdClient([]string{ep})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = cli.Close() }()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cli.Status(sctx, ep)
	if err != nil {
		return 0, 0, fmt.Errorf("status: %w", err)
	}
	return st.Header.MemberId, st.Leader, nil
}
