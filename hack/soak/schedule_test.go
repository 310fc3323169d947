package main

import (
	"slices"
	"testing"
)

func TestScheduleRoundsCoverEveryKind(t *testing.T) {
	s := NewSchedule(7, 3, 3)
	for round := 0; round < 5; round++ {
		var got []Kind
		for range AllKinds {
			f := s.Next()
			got = append(got, f.Kind)
			switch f.Kind {
			case RegistrarKill:
				if f.Host == ObservedHost || f.Host < 1 || f.Host > 3 {
					t.Errorf("registrar kill on host %d", f.Host)
				}
			case KernelEntries:
				if f.Peer == f.Host || f.Peer < 1 || f.Peer > 3 {
					t.Errorf("kernel entries: host %d peer %d", f.Host, f.Peer)
				}
			case EtcdMemberKill:
				if f.Member < 1 || f.Member > 3 || f.Host != 0 {
					t.Errorf("etcd member kill: %+v", f)
				}
			}
		}
		slices.Sort(got)
		want := slices.Clone(AllKinds)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: kinds %v, want each once", round, got)
		}
	}
}

func TestScheduleSameSeedSameFaults(t *testing.T) {
	a, b, c := NewSchedule(42, 3, 1), NewSchedule(42, 3, 1), NewSchedule(43, 3, 1)
	var fa, fb, fc []Fault
	for range 30 {
		fa, fb, fc = append(fa, a.Next()), append(fb, b.Next()), append(fc, c.Next())
	}
	if !slices.Equal(fa, fb) {
		t.Fatalf("one seed, two sequences:\n%v\n%v", fa, fb)
	}
	if slices.Equal(fa, fc) {
		t.Fatalf("seeds 42 and 43 gave the same sequence %v", fa)
	}
}

func TestFaultString(t *testing.T) {
	for f, want := range map[Fault]string{
		{Kind: KernelEntries, Host: 2, Peer: 3}: "routes/neigh/fdb deleted on h2 (peer h3)",
		{Kind: EtcdMemberKill, Member: 2}:       "etcd member kill (member 2)",
		{Kind: DockerdRestart, Host: 1}:         "dockerd restart on h1",
		{Kind: GarbageKey}:                      "garbage key",
	} {
		if got := f.String(); got != want {
			t.Errorf("%+v: %q, want %q", f, got, want)
		}
	}
}
