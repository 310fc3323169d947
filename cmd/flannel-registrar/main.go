// Command flannel-registrar makes custom Docker networks reachable across
// hosts that run flannel (VXLAN, etcd v3). One instance runs per host.
//
// Usage: flannel-registrar [run|once|diagnose|status|doctor|version|prepare|health] [flags];
// every flag is also an environment variable (see --help).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/flannel-registrar/flannel-registrar/cmd/flannel-registrar/app"
	"github.com/flannel-registrar/flannel-registrar/pkg/config"
	"github.com/flannel-registrar/flannel-registrar/pkg/health"
	"github.com/flannel-registrar/flannel-registrar/pkg/logging"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv)
	switch {
	case errors.Is(err, config.ErrHelp):
		config.Usage(stdout)
		return 0
	case err != nil:
		// Writes to stdout/stderr are unchecked: a broken terminal has nobody
		// to report to, and the exit code already says what happened.
		for line := range strings.SplitSeq(err.Error(), "\n") {
			_, _ = fmt.Fprintf(stderr, "flannel-registrar: invalid setting %s\n", line)
		}
		return 2
	case cfg.Mode == config.ModeVersion:
		_, _ = fmt.Fprintf(stdout, "flannel-registrar %s\n", version)
		return 0
	case cfg.Mode == config.ModeHealth:
		return checkHealth(cfg, stdout, stderr)
	case cfg.Mode == config.ModePrepare:
		return prepareHost(cfg, stdout, stderr)
	}

	defer setGCPercent(getenv)() // gc.go
	log := logging.New(stderr, cfg.LogFormat, cfg.Debug)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The heartbeat file is opened before the privilege drop: the
	// unprivileged daemon writes it through this descriptor.
	var hf *health.File
	if cfg.Mode == config.ModeRun {
		if hf, err = health.Open(cfg.HealthFile); err != nil {
			log.Error("cannot start", "error", err.Error())
			return 1
		}
		defer func() { _ = hf.Close() }()
	}
	stopProfiles, err := startProfiles(getenv)
	defer func() {
		if err := stopProfiles(); err != nil {
			log.Warn("writing profiles", "error", err.Error())
		}
	}()
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	if err := dropPrivileges(cfg, getenv, log); err != nil {
		log.Error(err.Error())
		return 1
	}

	a, err := app.New(cfg, log, version)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	defer a.Close()
	defer func() {
		// Before Close: the heap profile shows the daemon's state.
		if err := stopProfiles(); err != nil {
			log.Warn("writing profiles", "error", err.Error())
		}
		runtime.KeepAlive(a)
	}()
	switch cfg.Mode {
	case config.ModeOnce:
		err = a.Once(ctx)
	case config.ModeDiagnose:
		err = a.Diagnose(ctx, stdout)
	case config.ModeStatus:
		err = a.Status(ctx, stdout)
	case config.ModeDoctor:
		if err = a.Doctor(ctx, stdout); errors.Is(err, app.ErrChecksFailed) {
			return 1 // each failed check said why on stdout
		}
	default:
		err = runDaemon(ctx, a, hf, log, version)
	}
	if err != nil && ctx.Err() == nil {
		log.Error("stopped", "mode", string(cfg.Mode), "error", err.Error())
		return 1
	}
	return 0
}
