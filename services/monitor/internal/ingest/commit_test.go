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

// TestNextBatchIsStoredWhileOnStoredRunsAndAcksWaitForIt: while OnStored holds a stored batch, the
// next batch is inserted (the hand-off does not stop the commit loop), the held batch's event stays
// unacknowledged, and the next batch reaches OnStored only after it, in commit order; once
// OnStored returns, both events are acknowledged.
func TestNextBatchIsStoredWhileOnStoredRunsAndAcksWaitForIt(t *testing.T) {
	h := newHarness(t)
	var (
		mu      sync.Mutex
		handed  [][]string // the event ids of each OnStored call, in order
		entered = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	onStored := func(ctx context.Context, rows []store.Event) {
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.EventID
		}
		mu.Lock()
		handed = append(handed, ids)
		first := len(handed) == 1
		mu.Unlock()
		if first {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	h.runWith(t, ingest.Config{Store: h.store, MaxBatch: 1, Linger: -1, OnStored: onStored, Registerer: prometheus.NewRegistry()})

	first := h.publishTokens(t, 1)
	select {
	case <-entered:
	case <-time.After(testkit.DefaultWait):
		t.Fatal("OnStored was not called for the first batch")
	}
	second := h.publishTokens(t, 1)
	h.rows(t, "acme", 2) // stored while OnStored still holds the first batch

	c, err := h.js.Consumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream >= first.Sequence || info.NumAckPending != 2 {
		t.Errorf("while OnStored holds the first batch: ack floor %d, %d pending; want below %d and 2",
			info.AckFloor.Stream, info.NumAckPending, first.Sequence)
	}
	mu.Lock()
	calls := len(handed)
	mu.Unlock()
	if calls != 1 {
		t.Errorf("OnStored called %d times while the first call runs, want 1", calls)
	}

	close(release)
	h.waitAcked(t, second.Sequence)
	mu.Lock()
	defer mu.Unlock()
	if len(handed) != 2 || len(handed[0]) != 1 || handed[0][0] != first.ID || len(handed[1]) != 1 || handed[1][0] != second.ID {
		t.Errorf("OnStored got %v, want [[%s] [%s]]", handed, first.ID, second.ID)
	}
}
