package forwarding

import (
	"context"
	"fmt"
	"testing"

	"github.com/flannel-registrar/flannel-registrar/pkg/state"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// benchGroups is the scale: 1,000 networks in 20 groups (network i
// in group g<i%20>), 50 of them on this host, the others on 19 other hosts.
func benchGroups(s *state.Store, locals int) {
	var nets []state.LocalNetwork
	for i := range 1000 {
		cidr := fmt.Sprintf("198.18.%d.%d/28", i/16, (i%16)*16)
		g := fmt.Sprintf("g%d", i%20)
		if i < locals {
			nets = append(nets, grouped(fmt.Sprintf("n%d", i), cidr, g))
			continue
		}
		r := rec(byte(2+i%19), fmt.Sprintf("n%d", i), cidr, g)
		r.Host = fmt.Sprintf("h%d", 2+i%19)
		r.Key = fmt.Sprintf("/flannel/network/subnets/%s/n%d", r.Host, i)
		putRec(s, r)
	}
	s.ReplaceLocal(nets, "bench")
}

// BenchmarkGroups1000 measures, in a namespace with Docker's defaults, the
// reconcile of 1,000 networks in 20 groups: the first one (everything
// created), a converged resync (zero writes), one membership change, and
// the derivation alone. Run:
//
//	go test -run '^$' -bench BenchmarkGroups1000 -benchtime 20x ./controllers/forwarding/
func BenchmarkGroups1000(b *testing.B) {
	testutil.RequireRoot(b)
	for _, locals := range []int{50, 200} {
		b.Run(fmt.Sprintf("local=%d", locals), func(b *testing.B) {
			ns := testutil.NewNetns(b, "frdk")
			for _, args := range [][]string{
				{"-P", "FORWARD", "DROP"}, {"-N", "DOCKER-USER"}, {"-A", "FORWARD", "-j", "DOCKER-USER"},
			} {
				ns.Run(b, "iptables", args...)
			}
			s := newGroupsStore()
			benchGroups(s, locals)
			c, err := New(s, Options{IPTables: newNsIPT(b, ns), IPSets: netlinkxtest.Handle(b, ns), Host: self.Host})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.Run("first", func(b *testing.B) {
				// From nothing of ours: every set, member and rule created.
				var writes uint64
				for range b.N {
					b.StopTimer()
					if err := c.Remove(ctx); err != nil {
						b.Fatal(err)
					}
					before := c.Writes()
					b.StartTimer()
					if err := c.Reconcile(ctx, Key); err != nil {
						b.Fatal(err)
					}
					writes = c.Writes() - before
				}
				w := c.Want()
				var members int
				for _, ps := range w.Sets {
					members += len(ps)
				}
				b.ReportMetric(float64(writes), "writes/op")
				b.ReportMetric(float64(len(w.Filter)), "filter-rules")
				b.ReportMetric(float64(len(w.NAT)), "nat-rules")
				b.ReportMetric(float64(len(w.Sets)), "sets")
				b.ReportMetric(float64(members), "members")
			})
			b.Run("converged", func(b *testing.B) {
				writes := c.Writes()
				for range b.N {
					if err := c.Reconcile(ctx, Key); err != nil {
						b.Fatal(err)
					}
				}
				if c.Writes() != writes {
					b.Fatalf("converged reconciles wrote %d times", c.Writes()-writes)
				}
			})
			b.Run("one-member-change", func(b *testing.B) {
				r := rec(2, "moving", "198.19.200.0/24", "g1")
				writes := c.Writes()
				for range b.N {
					if _, ok := s.Network(r.Key); ok {
						s.DeleteNetwork(r.Key, "bench")
					} else {
						putRec(s, r)
					}
					if err := c.Reconcile(ctx, Key); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(c.Writes()-writes)/float64(b.N), "writes/op")
			})
			b.Run("derive", func(b *testing.B) {
				for range b.N {
					_ = c.Want()
				}
			})
		})
	}
}
