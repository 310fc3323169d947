package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/flannel-registrar/flannel-registrar/cmd/flannel-registrar/app"
	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/health"
	"github.com/flannel-registrar/flannel-registrar/pkg/hostprep"
	"github.com/flannel-registrar/flannel-registrar/pkg/privdrop"
)

// prepareHost is the prepare command: one line per sysctl looked at.
func prepareHost(cfg config.Config, stdout, stderr io.Writer) int {
	changes, err := hostprep.Prepare(hostprep.Options{Iface: cfg.VXLANIface})
	n := 0
	for _, c := range changes {
		if c.Changed() {
			n++
		}
		_, _ = fmt.Fprintf(stdout, "prepare: %s\n", c)
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "flannel-registrar: prepare: %v\n", err)
		return 1
	}
	if n == 0 {
		_, _ = fmt.Fprintln(stdout, "prepare: nothing changed")
	} else {
		_, _ = fmt.Fprintf(stdout, "prepare: %d changed\n", n)
	}
	return 0
}

// checkHealth is the health command (Docker's HEALTHCHECK): exit 0 when the
// daemon's heartbeat is fresh and ready, else 1 with the reason on one line.
func checkHealth(cfg config.Config, stdout, stderr io.Writer) int {
	s, err := health.Check(cfg.HealthFile, time.Now(), health.MaxAge)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	_, _ = fmt.Fprintf(stdout, "healthy: pid %d, version %s, heartbeat %s ago\n", s.PID, s.Version, time.Since(s.Time).Round(time.Millisecond))
	return 0
}

// dropPrivileges applies RUN_AS_ROOT (see pkg/privdrop) and logs the result.
func dropPrivileges(cfg config.Config, getenv func(string) string, log *slog.Logger) error {
	if cfg.RunAsRoot {
		log.Info("keeping the privileges the daemon was started with (RUN_AS_ROOT=true)")
		return nil
	}
	res, err := privdrop.Drop(privdrop.Options{Socket: privdrop.DockerSocketPath(getenv("DOCKER_HOST"))})
	if err != nil {
		return err
	}
	msg := "privileges dropped"
	if !res.Dropped {
		msg = "not started as root; capabilities narrowed"
	}
	log.Info(msg, "uid", res.UID, "gid", res.GID, "groups", res.Groups, "docker_socket_group", res.SocketGroup, "capabilities", res.Caps)
	return nil
}

// runDaemon runs the app with its heartbeat in hf (nil: none) and joins both.
func runDaemon(ctx context.Context, a *app.App, hf *health.File, log *slog.Logger, version string) error {
	if hf == nil {
		return a.Run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		hf.Heartbeat(ctx, health.Period, version, a.Ready, func(err error) {
			log.Warn("cannot write the health file", "error", err.Error())
		})
	})
	err := a.Run(ctx)
	cancel()
	wg.Wait()
	return err
}
