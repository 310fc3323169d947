package main

// This file: etcd requests per host in steady state.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
)

// etcdLoad runs one registrar (with load.locals local networks) among
// load.hosts simulated hosts' records and reports the gRPC requests etcd
// received during load.window, after convergence, by method.
func (b *bench) etcdLoad(ctx context.Context) error {
	const perHost = 5
	n := load.hosts * perHost
	if err := b.clear(ctx); err != nil {
		return err
	}
	if err := b.putRecords(ctx, n, perHost); err != nil {
		return err
	}
	b.locals, b.interval = load.locals, load.interval
	_, err := b.registrarRun(ctx, n, "", func(ctx context.Context, _ *netlinkx.Handle) error {
		// Let the start-up writes (registration, host record) settle.
		if err := sleep(ctx, 5*time.Second); err != nil {
			return err
		}
		before, err := b.grpcCounts(ctx)
		if err != nil {
			return err
		}
		if err := sleep(ctx, load.window); err != nil {
			return err
		}
		after, err := b.grpcCounts(ctx)
		if err != nil {
			return err
		}
		mins := load.window.Minutes()
		fmt.Printf("etcd requests from one registrar (INTERVAL %s, %d local networks) among %d hosts' records (%d remote subnets), over %s:\n",
			load.interval, load.locals, load.hosts, n, load.window)
		w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(w, "gRPC method\trequests\tper minute\t")
		total := 0.0
		// The usual methods always, in this order (Watch: the messages on
		// the watch stream, i.e. its progress requests and creates), then
		// any other.
		methods := []string{"Range", "Watch", "LeaseKeepAlive", "Put", "Txn"}
		for _, m := range slices.Sorted(maps.Keys(after)) {
			if !slices.Contains(methods, m) && after[m]-before[m] > 0 {
				methods = append(methods, m)
			}
		}
		for _, m := range methods {
			d := after[m] - before[m]
			_, _ = fmt.Fprintf(w, "%s\t%.0f\t%.1f\t\n", m, d, d/mins)
			total += d
		}
		_, _ = fmt.Fprintf(w, "all\t%.0f\t%.1f\t\n", total, total/mins)
		return w.Flush()
	})
	return err
}

// grpcCounts reads etcd's /metrics (through the unix socket) and returns
// grpc_server_msg_received_total by gRPC method (streams count each message,
// so keep-alives are counted one by one).
func (b *bench) grpcCounts(ctx context.Context) (map[string]float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", b.sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://etcd/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "grpc_server_msg_received_total{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(labels, ",") {
			if m, ok := strings.CutPrefix(l, "grpc_method="); ok {
				out[strings.Trim(m, `"`)] += v
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("etcd metrics: no grpc_server_msg_received_total")
	}
	return out, nil
}
