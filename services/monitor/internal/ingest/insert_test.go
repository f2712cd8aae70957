package ingest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// hungOnceInserter hangs its first insert until the insert's context ends (a store that does not
// answer), then passes inserts on; it records, per insert, the context's error and mark.
type hungOnceInserter struct {
	ingest.Inserter
	mu          sync.Mutex
	errs        []error
	redelivered []bool
}

func (h *hungOnceInserter) Insert(ctx context.Context, events []store.Event) error {
	h.mu.Lock()
	first := len(h.errs) == 0
	h.redelivered = append(h.redelivered, store.Redelivered(ctx))
	h.errs = append(h.errs, nil)
	h.mu.Unlock()
	if !first {
		return h.Inserter.Insert(ctx, events)
	}
	<-ctx.Done()
	h.mu.Lock()
	h.errs[0] = ctx.Err()
	h.mu.Unlock()
	return ctx.Err()
}

// TestHungStoreTimesOutAndTheBatchIsRedeliveredMarked: an insert the store never answers ends at
// the insert timeout (counted), its event is not acknowledged, and its redelivery is inserted
// marked store.WithRedelivered and stored once.
func TestHungStoreTimesOutAndTheBatchIsRedeliveredMarked(t *testing.T) {
	h := newHarness(t)
	hung := &hungOnceInserter{Inserter: h.store}
	reg := prometheus.NewRegistry()
	h.runWith(t, ingest.Config{Store: hung, InsertTimeout: 50 * time.Millisecond, Linger: -1, Registerer: reg,
		ConsumeOptions: []eventstore.ConsumeOption{eventstore.WithBackoff(10*time.Millisecond, 20*time.Millisecond)}})
	last := h.publishTokens(t, 1)
	h.waitAcked(t, last.Sequence)
	h.rows(t, "acme", 1)
	hung.mu.Lock()
	errs, marks := append([]error(nil), hung.errs...), append([]bool(nil), hung.redelivered...)
	hung.mu.Unlock()
	if len(errs) < 2 || !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Fatalf("inserts ended with %v, want a deadline first and then another insert", errs)
	}
	if marks[0] || !marks[len(marks)-1] {
		t.Errorf("redelivered marks %v: want the first insert unmarked and the redelivery marked", marks)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var timeouts float64
	for _, f := range families {
		if f.GetName() == "monitor_telemetry_insert_timeouts_total" {
			timeouts = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if timeouts != 1 {
		t.Errorf("monitor_telemetry_insert_timeouts_total = %v, want 1", timeouts)
	}
}
