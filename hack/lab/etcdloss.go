package lab

// This file: etcd losing its data (wiped, or restored from an older copy of
// its members' data directories), for the disaster-recovery scenarios.
// Every method stops every member first; the lab's etcd writes flannel's
// config again when it starts on data directories without one.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

func (l *Lab) etcdSnapshotDir(name string, member int) string {
	return l.path("etcd", "snapshot-"+name, etcdMemberName(member))
}

// WipeEtcd stops etcd, deletes every member's data directory and starts it again empty
// on the same addresses: the same member name, peer URL and cluster token,
// so the same cluster ID, but revisions start again from 1 and every lease
// is gone.
func (l *Lab) WipeEtcd(ctx context.Context) error {
	if err := l.StopEtcd(ctx); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	for i := 1; i <= l.EtcdMembers; i++ {
		if err := os.RemoveAll(l.EtcdMemberDataDir(i)); err != nil {
			return fmt.Errorf("wipe etcd data dir: %w", err)
		}
	}
	return l.StartEtcd(ctx)
}

// SnapshotEtcd stops etcd, copies every member's data directory aside as name (a
// backup taken the hard way: a copy of a cleanly stopped member) and starts
// it again on the original.
func (l *Lab) SnapshotEtcd(ctx context.Context, name string) error {
	if err := l.StopEtcd(ctx); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	for i := 1; i <= l.EtcdMembers; i++ {
		dst := l.etcdSnapshotDir(name, i)
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("remove old snapshot %s: %w", dst, err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("snapshot dir: %w", err)
		}
		if err := copyDir(ctx, l.EtcdMemberDataDir(i), dst); err != nil {
			return err
		}
	}
	return l.StartEtcd(ctx)
}

// RestoreEtcd stops etcd, replaces every member's data directory with the copy
// SnapshotEtcd took as name and starts it: etcd is back at that older
// revision, with the keys and leases it held then (the leases' TTLs
// restart when the member starts).
func (l *Lab) RestoreEtcd(ctx context.Context, name string) error {
	if err := l.StopEtcd(ctx); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	for i := 1; i <= l.EtcdMembers; i++ {
		if err := os.RemoveAll(l.EtcdMemberDataDir(i)); err != nil {
			return fmt.Errorf("remove etcd data dir: %w", err)
		}
		if err := copyDir(ctx, l.etcdSnapshotDir(name, i), l.EtcdMemberDataDir(i)); err != nil {
			return err
		}
	}
	return l.StartEtcd(ctx)
}

// copyDir copies the directory src to dst (which must not exist), keeping
// modes: cp -a, the way an operator copies a data directory.
func copyDir(ctx context.Context, src, dst string) error {
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s to %s: %w: %s", src, dst, err, out)
	}
	return nil
}
