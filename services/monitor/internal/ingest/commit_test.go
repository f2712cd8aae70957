package ingest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// recordingInserter records the number of rows of every insert.
type recordingInserter struct {
	ingest.Inserter
	mu    sync.Mutex
	sizes []int
}

func (r *recordingInserter) Insert(ctx context.Context, events []store.Event) error {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(events))
	r.mu.Unlock()
	return r.Inserter.Insert(ctx, events)
}

func (r *recordingInserter) inserts() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes...)
}

func (h *harness) publishTokens(t *testing.T, n int) (last eventstore.Event) {
	t.Helper()
	for i := range n {
		last = h.publish(t, "telemetry.acme.token.requested", "token.requested", "", &issuerv1.TokenRequested{Tenant: "acme", ClientId: "c", RequestId: string(rune('a' + i%26))},
			eventstore.Metadata{Tenant: "acme"})
	}
	return last
}

// TestCommitLingersUntilMaxBatch: with a linger longer than any test, the only thing that ends a
// commit's wait is MaxBatch rows, so ten events make exactly one insert of ten rows.
func TestCommitLingersUntilMaxBatch(t *testing.T) {
	h := newHarness(t)
	rec := &recordingInserter{Inserter: h.store}
	h.runWith(t, ingest.Config{Store: rec, MaxBatch: 10, Linger: time.Hour, Registerer: prometheus.NewRegistry()})
	last := h.publishTokens(t, 10)
	h.waitAcked(t, last.Sequence)
	h.rows(t, "acme", 10)
	if got := rec.inserts(); len(got) != 1 || got[0] != 10 {
		t.Errorf("inserts of %v rows, want one of 10", got)
	}
}

// TestStopDuringALingerLosesAndDuplicatesNothing stops a consumer whose events wait in a commit's
// linger: Run returns, and a new consumer stores every event exactly once.
func TestStopDuringALingerLosesAndDuplicatesNothing(t *testing.T) {
	h := newHarness(t)
	stop := h.runWith(t, ingest.Config{Store: h.store, MaxBatch: 1000, Linger: time.Hour, Registerer: prometheus.NewRegistry()})
	last := h.publishTokens(t, 3)
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		c, err := h.js.Consumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName)
		if err == nil {
			if info, err := c.Info(t.Context()); err == nil && info.NumAckPending == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the three events were not delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()

	h.runWith(t, ingest.Config{Store: h.store, Linger: -1, Registerer: prometheus.NewRegistry()})
	h.waitAcked(t, last.Sequence)
	rows := h.rows(t, "acme", 3)
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.EventID] {
			t.Fatalf("event %s stored twice", r.EventID)
		}
		seen[r.EventID] = true
	}
}
