package docker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
)

// BenchmarkNetworkCreateToStore measures, against a real dockerd, the time
// from `docker network create` returning to the network being in the store
// (and the same for `docker network rm`). Run with e.g. -benchtime=20x.
// Values are signed: negative means the store had the change before the
// command returned (dockerd publishes the event before it answers).
// "cli" is the docker CLI process; "api" is the Go client's NetworkCreate
// (no process start and exit in the measurement).
func BenchmarkNetworkCreateToStore(b *testing.B) {
	d, store, _ := realSetup(b)
	var mu sync.Mutex
	seen := map[string]time.Time{} // "+name" / "-name" → when the store changed
	store.Subscribe(func(ev state.Event) {
		if ev.Kind != state.KindLocal {
			return
		}
		sign := "+"
		if ev.New == nil {
			sign = "-"
		}
		mu.Lock()
		seen[sign+ev.Key] = time.Now()
		mu.Unlock()
	})
	wait := func(key string, since time.Time) time.Duration {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			at, ok := seen[key]
			mu.Unlock()
			if ok {
				return at.Sub(since)
			}
			<-tick.C
		}
		b.Fatalf("store never saw %s", key)
		return 0
	}
	api := d.Client()
	ctx := context.Background()
	var cliCreate, cliRemove, apiCreate, apiRemove []time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("cli%d", i)
		d.Docker(b, "network", "create", "--subnet", fmt.Sprintf("198.18.%d.0/24", 100+i%100), name)
		cliCreate = append(cliCreate, wait("+"+name, time.Now()))
		d.Docker(b, "network", "rm", name)
		cliRemove = append(cliRemove, wait("-"+name, time.Now()))

		name = fmt.Sprintf("api%d", i)
		opts := network.CreateOptions{Driver: "bridge", IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: fmt.Sprintf("198.18.%d.0/24", 100+i%100)}}}}
		if _, err := api.NetworkCreate(ctx, name, opts); err != nil {
			b.Fatalf("network create: %v", err)
		}
		apiCreate = append(apiCreate, wait("+"+name, time.Now()))
		if err := api.NetworkRemove(ctx, name); err != nil {
			b.Fatalf("network rm: %v", err)
		}
		apiRemove = append(apiRemove, wait("-"+name, time.Now()))
	}
	b.StopTimer()
	report(b, "cli-create", cliCreate)
	report(b, "cli-rm", cliRemove)
	report(b, "api-create", apiCreate)
	report(b, "api-rm", apiRemove)
}

func report(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	p50, worst := ds[len(ds)/2], ds[len(ds)-1]
	b.ReportMetric(float64(p50.Microseconds())/1000, what+"-p50-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, what+"-max-ms")
	b.Logf("%s returned → store: n=%d min=%s p50=%s max=%s", what, len(ds), ds[0], p50, worst)
}
