package testutil

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// Forward listens on listen (e.g. "127.0.0.1:2379") inside the namespace and
// forwards every connection to target as dialled from the test's own
// namespace. It lets a daemon running in a test namespace reach a server the
// test runs on its loopback (the embedded etcd) without touching the root
// namespace's addresses or routes. Stopped when the test ends.
func (n *Netns) Forward(t testing.TB, listen, target string) {
	t.Helper()
	var ln net.Listener
	// The socket belongs to the namespace it was created in, whatever thread
	// later accepts on it.
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", listen)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", listen, n.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed at cleanup
			}
			wg.Go(func() { pipe(ctx, c, target) })
		}
	})
}

func pipe(ctx context.Context, in net.Conn, target string) {
	defer in.Close()
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return // the client sees a closed connection, like a refused one
	}
	defer out.Close()
	stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
	defer stop()
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // an error mid-stream ends this connection only
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	wg.Go(func() { cp(out, in) })
	wg.Go(func() { cp(in, out) })
	wg.Wait()
}
