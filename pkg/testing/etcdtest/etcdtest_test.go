package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartRestartCompact(t *testing.T) {
	s := Start(t)
	cli := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put, err := cli.Put(ctx, "/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	// The client made before the restart reconnects by itself.
	got, err := cli.Get(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "1" {
		t.Fatalf("after restart /a = %v, want 1", got.Kvs)
	}
	if _, err := cli.Put(ctx, "/a", "2"); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision(t)
	if rev <= put.Header.Revision {
		t.Fatalf("revision %d not after %d", rev, put.Header.Revision)
	}
	s.Compact(t, rev)
	if _, err := cli.Get(ctx, "/a", clientWithRev(put.Header.Revision)...); err == nil {
		t.Fatal("read at a compacted revision succeeded")
	}
	s.Stop()
	if s.Running() {
		t.Fatal("Running after Stop")
	}
}

func clientWithRev(rev int64) []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithRev(rev)} }
