package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// failingInserter makes the n-th insert (counted from 1) fail with err, or panic with it when
// panics is set; every other insert goes to the Inserter. It counts the inserts.
type failingInserter struct {
	ingest.Inserter
	n      int64
	err    error
	panics bool
	calls  atomic.Int64
}

func (f *failingInserter) Insert(ctx context.Context, events []store.Event) error {
	if f.calls.Add(1) == f.n {
		if f.panics {
			panic(f.err)
		}
		return f.err
	}
	return f.Inserter.Insert(ctx, events)
}

// heldOnStored is an OnStored that records the event ids of each call and holds its first call
// until release is closed or its ctx is done.
type heldOnStored struct {
	mu      sync.Mutex
	handed  [][]string
	entered chan struct{}
	release chan struct{}
}

func newHeldOnStored() *heldOnStored {
	return &heldOnStored{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (o *heldOnStored) onStored(ctx context.Context, rows []store.Event) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.EventID
	}
	o.mu.Lock()
	o.handed = append(o.handed, ids)
	first := len(o.handed) == 1
	o.mu.Unlock()
	if first {
		o.entered <- struct{}{}
		select {
		case <-o.release:
		case <-ctx.Done():
		}
	}
}

func (o *heldOnStored) calls() [][]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.handed)
}

func (o *heldOnStored) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-o.entered:
	case <-time.After(testkit.DefaultWait):
		t.Fatal("OnStored was not called for the first batch")
	}
}

// consumerInfo reads the durable consumer's state.
func (h *harness) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := h.js.Consumer(t.Context(), eventstore.StreamTelemetry, ingest.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestStopWhileOnStoredHoldsABatchAcknowledgesNeither stops the consumer while OnStored holds
// batch N and batch N+1 is stored, waiting for the hand-off: neither event is acknowledged, and a
// new consumer gets both again, hands both on and stores each once.
func TestStopWhileOnStoredHoldsABatchAcknowledgesNeither(t *testing.T) {
	h := newHarness(t)
	held := newHeldOnStored()
	stop := h.runWith(t, ingest.Config{Store: h.store, MaxBatch: 1, Linger: -1, OnStored: held.onStored, Registerer: prometheus.NewRegistry()})
	first := h.publishTokens(t, 1)
	held.waitEntered(t)
	second := h.publishTokens(t, 1)
	h.rows(t, "acme", 2) // the second batch is stored too

	stop()
	info := h.consumerInfo(t)
	if info.AckFloor.Stream >= first.Sequence {
		t.Fatalf("after a stop while OnStored held the first batch: ack floor %d, want below %d", info.AckFloor.Stream, first.Sequence)
	}

	again := newHeldOnStored()
	close(again.release)
	h.runWith(t, ingest.Config{Store: h.store, MaxBatch: 1, Linger: -1, OnStored: again.onStored, Registerer: prometheus.NewRegistry()})
	h.waitAcked(t, second.Sequence)
	h.rows(t, "acme", 2)
	got := map[string]bool{}
	for _, ids := range again.calls() {
		for _, id := range ids {
			got[id] = true
		}
	}
	if !got[first.ID] || !got[second.ID] {
		t.Errorf("after the restart OnStored got %v, want both %s and %s again", again.calls(), first.ID, second.ID)
	}
}

// TestInsertFailureWhileOnStoredHoldsABatch: batch N+1's insert fails while OnStored holds batch N.
// N+1's event is refused at once, not held behind N (it is redelivered and stored while N is still
// held), and N is acknowledged once OnStored returns; the failed batch never reaches OnStored.
func TestInsertFailureWhileOnStoredHoldsABatch(t *testing.T) {
	h := newHarness(t)
	held := newHeldOnStored()
	failing := &failingInserter{Inserter: h.store, n: 2, err: errors.New("store unavailable")}
	h.runWith(t, ingest.Config{
		Store: failing, MaxBatch: 1, Linger: -1, OnStored: held.onStored, Registerer: prometheus.NewRegistry(),
		ConsumeOptions: []eventstore.ConsumeOption{eventstore.WithBackoff(10 * time.Millisecond)},
	})
	first := h.publishTokens(t, 1)
	held.waitEntered(t)
	second := h.publishTokens(t, 1)

	// The redelivery of the refused event is inserted (the third insert) while OnStored still
	// holds the first batch.
	h.rows(t, "acme", 2)
	if n := failing.calls.Load(); n != 3 {
		t.Errorf("%d inserts while OnStored holds the first batch, want 3 (the second failing, then its redelivery)", n)
	}
	if info := h.consumerInfo(t); info.AckFloor.Stream >= first.Sequence {
		t.Errorf("while OnStored holds the first batch: ack floor %d, want below %d", info.AckFloor.Stream, first.Sequence)
	}
	if calls := held.calls(); len(calls) != 1 {
		t.Errorf("OnStored called %d times while the first call runs, want 1", len(calls))
	}

	close(held.release)
	h.waitAcked(t, second.Sequence)
	want := [][]string{{first.ID}, {second.ID}}
	if got := held.calls(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("OnStored got %v, want %v", got, want)
	}
}

// panicChildEnv runs TestPanicInTheCommitLoopEndsTheProcess's scenario in a child process.
const panicChildEnv = "AGENTID_INGEST_PANIC_CHILD"

const (
	panicMessage = "the second insert panics"
	hungMessage  = "the panic did not end the process"
)

// TestPanicInTheCommitLoopEndsTheProcess: an insert panics while OnStored holds the previous
// batch and waits for its ctx (as detection does while ALERTS is unavailable). The panic must end
// the process at once, as it would without the hand-off, rather than wait for OnStored with every
// Handle blocked. The commit loop is the consumer's own goroutine, so the panic cannot be
// recovered around Run: the scenario runs in a child process, which must die of the panic.
func TestPanicInTheCommitLoopEndsTheProcess(t *testing.T) {
	if os.Getenv(panicChildEnv) == "1" {
		runPanicChild(t)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*testkit.DefaultWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPanicInTheCommitLoopEndsTheProcess$", "-test.count=1")
	// The child dies without its cleanups: its temporary directories go under this test's own.
	cmd.Env = append(os.Environ(), panicChildEnv+"=1", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the child process did not end: %v\n%s", ctx.Err(), out)
	}
	if err == nil {
		t.Fatalf("the child process succeeded, want it to die of the panic\n%s", out)
	}
	if !strings.Contains(string(out), "panic: "+panicMessage) || strings.Contains(string(out), hungMessage) {
		t.Fatalf("the child process did not die of the insert's panic at once (%v):\n%s", err, out)
	}
}

func runPanicChild(t *testing.T) {
	h := newHarness(t)
	held := newHeldOnStored() // never released: only a done ctx ends its first call
	failing := &failingInserter{Inserter: h.store, n: 2, err: errors.New(panicMessage), panics: true}
	h.runWith(t, ingest.Config{Store: failing, MaxBatch: 1, Linger: -1, OnStored: held.onStored, Registerer: prometheus.NewRegistry()})
	h.publishTokens(t, 1)
	held.waitEntered(t)
	h.publishTokens(t, 1) // its insert panics
	<-time.After(testkit.DefaultWait)
	// Still alive: say so and exit without the cleanups, which would stop the consumer and so
	// let the panic through late.
	fmt.Fprintln(os.Stderr, hungMessage)
	os.Exit(3)
}
