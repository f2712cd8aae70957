package eventstore_test

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// BenchmarkAppendSyncAlways appends events to distinct agents, 32 at a time, against a NATS server
// that fsyncs every write, with and without group commit.
//
//	go test -run '^$' -bench BenchmarkAppendSyncAlways -benchtime 6000x ./pkg/eventstore/
func BenchmarkAppendSyncAlways(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []eventstore.Option
	}{
		{"single", nil},
		{"group", []eventstore.Option{eventstore.WithGroupCommit(eventstore.GroupCommit{})}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			n := testkit.StartNATS(b, testkit.WithSyncAlways())
			s := eventstore.New(n.JetStream(b), append([]eventstore.Option{eventstore.WithLogger(quiet), eventstore.WithRegisterer(reg)}, tc.opts...)...)
			if err := s.EnsureStreams(b.Context()); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.SetParallelism(max(1, 32/testkitProcs()))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					a := agentAppend("acme", "a"+strconv.FormatInt(seq.Add(1), 10), "registered", 0, "x")
					if _, err := s.Append(b.Context(), a); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			// The average batch, from the store's metrics.
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "agentid_eventstore_group_commit_batch_events" {
					for _, m := range mf.GetMetric() {
						if h := m.GetHistogram(); h.GetSampleCount() > 0 {
							b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "events/batch")
						}
					}
				}
			}
		})
	}
}

func testkitProcs() int { return runtime.GOMAXPROCS(0) }
