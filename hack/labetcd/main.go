// Command labetcd is one member of the lab's etcd: a real etcd server (the
// embedded go.etcd.io/etcd/server/v3/embed, same version as the client the
// product uses) run as its own process, so the lab can stop, kill or
// partition one member and start it again on the same data directory.
// --name and --initial-cluster make it a member of a cluster (default: a
// cluster of one).
//
// It listens on a TCP client URL (the underlay address, reached by the lab
// hosts) and optionally on a unix socket (reached by lab tooling from any
// network namespace). On start it writes flannel's network config under
// --flannel-prefix if no config is there yet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

type options struct {
	name           string
	initialCluster string
	dataDir        string
	clientURL      string
	peerURL        string
	unixSocket     string
	flannelPrefix  string
	flannelConfig  string
	startupTimeout time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.name, "name", "frlab", "member name")
	flag.StringVar(&o.initialCluster, "initial-cluster", "", "name=peerURL,... of every member (default: this member alone)")
	flag.StringVar(&o.dataDir, "data-dir", "", "etcd data directory (required)")
	flag.StringVar(&o.clientURL, "client-url", "http://198.51.100.2:2379", "client URL to listen on and advertise")
	flag.StringVar(&o.peerURL, "peer-url", "http://198.51.100.2:2380", "peer URL to listen on and advertise")
	flag.StringVar(&o.unixSocket, "unix-socket", "", "also serve clients on this unix socket path")
	flag.StringVar(&o.flannelPrefix, "flannel-prefix", "/coreos.com/network", "flannel's etcd prefix")
	flag.StringVar(&o.flannelConfig, "flannel-config", "", "flannel network config JSON written to <prefix>/config when absent")
	flag.DurationVar(&o.startupTimeout, "startup-timeout", time.Minute, "how long to wait for the server to be ready (0: no limit; a cluster member waits for its peers)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(o, log); err != nil {
		log.Error("labetcd failed", "err", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger) error {
	if o.dataDir == "" {
		return errors.New("--data-dir is required")
	}
	cfg, err := serverConfig(o)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()

	var timeout <-chan time.Time
	if o.startupTimeout > 0 {
		timeout = time.After(o.startupTimeout)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-timeout:
		return fmt.Errorf("etcd not ready after %s", o.startupTimeout)
	case <-ctx.Done():
		log.Info("labetcd stopping before it was ready")
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd server: %w", err)
	}
	if o.flannelConfig != "" {
		if err := putFlannelConfig(o); err != nil {
			return err
		}
	}
	log.Info("labetcd ready", "name", o.name, "client", o.clientURL, "unix", o.unixSocket, "data", o.dataDir)

	select {
	case <-ctx.Done():
		log.Info("labetcd stopping")
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd server: %w", err)
	}
}

func serverConfig(o options) (*embed.Config, error) {
	client, err := url.Parse(o.clientURL)
	if err != nil {
		return nil, fmt.Errorf("parse --client-url %q: %w", o.clientURL, err)
	}
	peer, err := url.Parse(o.peerURL)
	if err != nil {
		return nil, fmt.Errorf("parse --peer-url %q: %w", o.peerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = o.name
	cfg.Dir = o.dataDir
	cfg.LogLevel = "warn"
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	if o.unixSocket != "" {
		// A unix socket is reachable from every network namespace, so lab
		// tooling in the root namespace can talk to etcd without any route.
		_ = os.Remove(o.unixSocket)
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, url.URL{Scheme: "unix", Path: o.unixSocket})
	}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = o.initialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.Name + "=" + peer.String()
	}
	cfg.InitialClusterToken = "frlab"
	return cfg, nil
}

func putFlannelConfig(o options) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{o.clientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := o.flannelPrefix + "/config"
	_, err = cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, o.flannelConfig)).
		Commit()
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}
