package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// groupEnv starts a NATS server that fsyncs every write and a store with group commit.
func groupEnv(t *testing.T, natsOpts ...testkit.NATSOption) (*testkit.NATS, *eventstore.Store) {
	t.Helper()
	n := testkit.StartNATS(t, append([]testkit.NATSOption{testkit.WithSyncAlways()}, natsOpts...)...)
	s := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"), eventstore.WithLogger(quiet),
		eventstore.WithGroupCommit(eventstore.GroupCommit{}))
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return n, s
}

// appendResult is one concurrent Append's outcome.
type appendResult struct {
	a   eventstore.Append
	ev  eventstore.Event
	err error
}

// appendPaused queues appends while the group committer is paused, so that they form one batch
// (several if they touch one aggregate more than once), then resumes it and returns their results
// in the order of appends.
func appendPaused(t *testing.T, s *eventstore.Store, appends []eventstore.Append) []appendResult {
	t.Helper()
	resume := eventstore.PauseGroupCommit(s)
	defer resume()
	out := make([]appendResult, len(appends))
	var wg sync.WaitGroup
	for i, a := range appends {
		out[i].a = a
		wg.Go(func() { out[i].ev, out[i].err = s.Append(t.Context(), a) })
		// Queue them in order: the batch keeps the order in which they arrived.
		if err := testkit.Poll(t.Context(), 0, func() (bool, error) {
			return eventstore.PendingGroupCommits(s, eventstore.StreamAgents) == i+1, nil
		}); err != nil {
			t.Fatalf("append %d never queued: %v", i, err)
		}
	}
	resume()
	wg.Wait()
	return out
}

// batchIDOf returns the Nats-Batch-Id header the server stored with the message at seq ("" if it
// was not published in an atomic batch).
func batchIDOf(t *testing.T, js jetstream.JetStream, seq uint64) string {
	t.Helper()
	st, err := js.Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m.Header.Get("Nats-Batch-Id")
}

// checkStored asserts that ev is stored at its sequence: the aggregate's events hold it with the
// same id, type and sequence.
func checkStored(t *testing.T, s *eventstore.Store, ev eventstore.Event) {
	t.Helper()
	events, _, err := s.Load(t.Context(), ev.Metadata.Tenant, ev.AggregateType, ev.AggregateID)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range events {
		if got.Sequence == ev.Sequence {
			if got.ID != ev.ID || got.Type != ev.Type || got.Stream != ev.Stream {
				t.Fatalf("%s/%d holds event %s (%s), the append returned %s (%s)", ev.Stream, ev.Sequence, got.ID, got.Type, ev.ID, ev.Type)
			}
			return
		}
	}
	t.Fatalf("event %s returned at %s/%d is not among agent %s's events", ev.ID, ev.Stream, ev.Sequence, ev.AggregateID)
}

func TestGroupCommitConcurrentAppendsGetTheirOwnEvents(t *testing.T) {
	_, s := groupEnv(t)
	const n = 40
	appends := make([]eventstore.Append, n)
	for i := range appends {
		appends[i] = agentAppend("acme", fmt.Sprintf("g%d", i), "registered", 0, fmt.Sprintf("value %d", i))
	}
	results := appendPaused(t, s, appends)
	seqs := map[uint64]bool{}
	batches := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("append to %s: %v", r.a.AggregateID, r.err)
		}
		if seqs[r.ev.Sequence] {
			t.Fatalf("sequence %d returned twice", r.ev.Sequence)
		}
		seqs[r.ev.Sequence] = true
		if r.ev.AggregateID != r.a.AggregateID || stringValue(t, r.ev) != r.a.Data.(*wrapperspb.StringValue).GetValue() {
			t.Fatalf("append to %s returned the event of %s", r.a.AggregateID, r.ev.AggregateID)
		}
		checkStored(t, s, r.ev)
		batches[batchIDOf(t, s.JetStream(), r.ev.Sequence)]++
	}
	if got := streamMsgs(t, &env{store: s}, eventstore.StreamAgents); got != n {
		t.Fatalf("AGENTS holds %d events, want %d", got, n)
	}
	// Queued together, they were stored as one batch, in the order they arrived.
	if len(batches) != 1 || batches[""] != 0 {
		t.Fatalf("events stored in batches %v, want all %d in one atomic batch", batches, n)
	}
	for i := 1; i < n; i++ {
		if results[i].ev.Sequence != results[i-1].ev.Sequence+1 {
			t.Fatalf("append %d got sequence %d after %d", i, results[i].ev.Sequence, results[i-1].ev.Sequence)
		}
	}
}

func TestGroupCommitUnderLoad(t *testing.T) {
	_, s := groupEnv(t)
	const workers, per = 16, 25
	var (
		mu     sync.Mutex
		events []eventstore.Event
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			version := uint64(0)
			for i := range per {
				// Each worker appends to its own aggregate with its expected version and to a new one.
				ev, err := s.Append(t.Context(), agentAppend("acme", fmt.Sprintf("w%d", w), "changed", version, fmt.Sprint(i)))
				if err != nil {
					t.Errorf("worker %d append %d: %v", w, i, err)
					return
				}
				version = ev.Sequence
				fresh, err := s.Append(t.Context(), agentAppend("acme", fmt.Sprintf("w%d-%d", w, i), "registered", 0, "x"))
				if err != nil {
					t.Errorf("worker %d new agent %d: %v", w, i, err)
					return
				}
				mu.Lock()
				events = append(events, ev, fresh)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seqs := map[uint64]bool{}
	for _, ev := range events {
		if seqs[ev.Sequence] {
			t.Fatalf("sequence %d returned twice", ev.Sequence)
		}
		seqs[ev.Sequence] = true
		checkStored(t, s, ev)
	}
	if got := streamMsgs(t, &env{store: s}, eventstore.StreamAgents); got != 2*workers*per {
		t.Fatalf("AGENTS holds %d events, want %d", got, 2*workers*per)
	}
}

func TestGroupCommitConflictFailsOnlyItsAppend(t *testing.T) {
	_, s := groupEnv(t)
	a := mustAppend(t, s, agentAppend("acme", "a", "registered", 0, "a1"))
	b := mustAppend(t, s, agentAppend("acme", "b", "registered", 0, "b1"))
	c := mustAppend(t, s, agentAppend("acme", "c", "registered", 0, "c1"))
	results := appendPaused(t, s, []eventstore.Append{
		agentAppend("acme", "a", "changed", a.Sequence, "a2"),
		agentAppend("acme", "b", "changed", a.Sequence, "b2"), // stale: b is at b.Sequence
		agentAppend("acme", "c", "changed", c.Sequence, "c2"),
		agentAppend("acme", "d", "registered", 0, "d1"),
	})
	for i, r := range results {
		switch {
		case i == 1:
			var ce *eventstore.ConflictError
			if !errors.As(r.err, &ce) || !errors.Is(r.err, eventstore.ErrConflict) || ce.Actual != b.Sequence {
				t.Fatalf("stale append to b: got %v, want a conflict at version %d", r.err, b.Sequence)
			}
		case r.err != nil:
			t.Fatalf("append to %s: %v", r.a.AggregateID, r.err)
		default:
			checkStored(t, s, r.ev)
		}
	}
	if got := streamMsgs(t, &env{store: s}, eventstore.StreamAgents); got != 6 {
		t.Fatalf("AGENTS holds %d events, want 6", got)
	}
}

func TestGroupCommitOneAggregateTwiceInAWindow(t *testing.T) {
	_, s := groupEnv(t)
	a := mustAppend(t, s, agentAppend("acme", "a", "registered", 0, "a1"))
	// Two commands decided on the same version: only one may be stored, in whichever batch.
	results := appendPaused(t, s, []eventstore.Append{
		agentAppend("acme", "a", "changed", a.Sequence, "first"),
		agentAppend("acme", "b", "registered", 0, "b1"),
		agentAppend("acme", "a", "changed", a.Sequence, "second"),
		agentAppend("acme", "a", "noted", eventstore.AnyVersion, "third"),
	})
	for _, i := range []int{0, 1, 3} {
		if results[i].err != nil {
			t.Fatalf("append %d: %v", i, results[i].err)
		}
	}
	if !errors.Is(results[2].err, eventstore.ErrConflict) {
		t.Fatalf("second append on the same version: got %v, want a conflict", results[2].err)
	}
	events, version, err := s.Load(t.Context(), "acme", "agent", "a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range events {
		got = append(got, stringValue(t, ev))
	}
	if fmt.Sprint(got) != "[a1 first third]" || version != results[3].ev.Sequence {
		t.Fatalf("agent a holds %v at version %d, want [a1 first third] at %d", got, version, results[3].ev.Sequence)
	}
}

func TestGroupCommitRepeatReturnsTheOriginal(t *testing.T) {
	_, s := groupEnv(t)
	first := agentAppend("acme", "a", "registered", 0, "a1")
	orig := mustAppend(t, s, first)
	repeatNewer := first
	repeatNewer.ExpectedVersion = orig.Sequence
	results := appendPaused(t, s, []eventstore.Append{
		first,       // the same command again
		repeatNewer, // again, decided on the version it produced
		agentAppend("acme", "b", "registered", 0, "b1"),
	})
	for i, r := range results[:2] {
		if r.err != nil {
			t.Fatalf("repeat %d: %v", i, r.err)
		}
		if r.ev.ID != orig.ID || r.ev.Sequence != orig.Sequence {
			t.Fatalf("repeat %d returned %s/%d, want the original %s/%d", i, r.ev.ID, r.ev.Sequence, orig.ID, orig.Sequence)
		}
	}
	if results[2].err != nil {
		t.Fatalf("append to b: %v", results[2].err)
	}
	checkStored(t, s, results[2].ev)
	if got := streamMsgs(t, &env{store: s}, eventstore.StreamAgents); got != 2 {
		t.Fatalf("AGENTS holds %d events, want 2", got)
	}
	// A key reused for another event type on the aggregate fails as without group commit.
	reused := agentAppend("acme", "a", "changed", eventstore.AnyVersion, "x")
	reused.IdempotencyKey = first.IdempotencyKey
	results = appendPaused(t, s, []eventstore.Append{reused, agentAppend("acme", "c", "registered", 0, "c1")})
	if !errors.Is(results[0].err, eventstore.ErrIdempotencyKeyReused) {
		t.Fatalf("reused key: got %v, want ErrIdempotencyKeyReused", results[0].err)
	}
	if results[1].err != nil {
		t.Fatalf("append to c: %v", results[1].err)
	}
}

func TestGroupCommitCancelledWhileQueued(t *testing.T) {
	_, s := groupEnv(t)
	resume := eventstore.PauseGroupCommit(s)
	defer resume()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, agentAppend("acme", "a", "registered", 0, "a1"))
		errc <- err
	}()
	if err := testkit.Poll(t.Context(), 0, func() (bool, error) {
		return eventstore.PendingGroupCommits(s, eventstore.StreamAgents) == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled append: got %v, want context.Canceled", err)
	}
	if got := eventstore.PendingGroupCommits(s, eventstore.StreamAgents); got != 0 {
		t.Fatalf("%d appends still queued after the cancelled one returned", got)
	}
	resume()
	next := mustAppend(t, s, agentAppend("acme", "b", "registered", 0, "b1"))
	if got := streamMsgs(t, &env{store: s}, eventstore.StreamAgents); got != 1 || next.Sequence != 1 {
		t.Fatalf("AGENTS holds %d events (b at %d), want only b at 1: the cancelled append was stored", got, next.Sequence)
	}
}

// TestGroupCommitServerRestartUnderLoad restarts the server while batches are being committed:
// every append that returned an event must have it stored at that sequence, none stored twice.
func TestGroupCommitServerRestartUnderLoad(t *testing.T) {
	n, s := groupEnv(t)
	var (
		stop    atomic.Bool
		mu      sync.Mutex
		results []appendResult
		wg      sync.WaitGroup
		key     atomic.Int64
	)
	for w := range 16 {
		wg.Go(func() {
			for !stop.Load() {
				a := agentAppend("acme", fmt.Sprintf("r%d-%d", w, key.Add(1)), "registered", 0, "x")
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				ev, err := s.Append(ctx, a)
				cancel()
				mu.Lock()
				results = append(results, appendResult{a: a, ev: ev, err: err})
				mu.Unlock()
			}
		})
	}
	// Wait for some acknowledged appends, restart, and wait for appends acknowledged after it.
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		c := 0
		for _, r := range results {
			if r.err == nil {
				c++
			}
		}
		return c
	}
	if err := testkit.Poll(t.Context(), 0, func() (bool, error) { return acked() >= 200, nil }); err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatal(err)
	}
	n.Restart(t)
	before := acked()
	if err := testkit.Poll(t.Context(), 0, func() (bool, error) { return acked() >= before+200, nil }); err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()

	stored := map[string]eventstore.Event{} // aggregate -> its only event
	st, err := s.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		events, _, err := s.Load(t.Context(), "acme", "agent", r.a.AggregateID)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) > 1 {
			t.Fatalf("agent %s stored %d times", r.a.AggregateID, len(events))
		}
		if len(events) == 1 {
			stored[r.a.AggregateID] = events[0]
		}
		if r.err != nil {
			continue
		}
		if len(events) == 0 {
			t.Fatalf("append to %s acknowledged at %d but not stored", r.a.AggregateID, r.ev.Sequence)
		}
		if events[0].ID != r.ev.ID || events[0].Sequence != r.ev.Sequence {
			t.Fatalf("append to %s returned %s/%d, the stream holds %s/%d", r.a.AggregateID, r.ev.ID, r.ev.Sequence, events[0].ID, events[0].Sequence)
		}
	}
	if info.State.Msgs != uint64(len(stored)) {
		t.Fatalf("AGENTS holds %d events, the appends account for %d", info.State.Msgs, len(stored))
	}
}

// TestGroupCommitAckedEventsSurviveRestart: an acknowledged batch is on disk when the server comes
// back on the same storage.
func TestGroupCommitAckedEventsSurviveRestart(t *testing.T) {
	n, s := groupEnv(t, testkit.WithStoreDir(t.TempDir()))
	appends := make([]eventstore.Append, 10)
	for i := range appends {
		appends[i] = agentAppend("acme", fmt.Sprintf("k%d", i), "registered", 0, fmt.Sprint(i))
	}
	results := appendPaused(t, s, appends)
	n.Shutdown()
	n.Start(t)
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("append to %s: %v", r.a.AggregateID, r.err)
		}
		ctx := ctxTimeout(t, 30*time.Second)
		if err := testkit.Poll(ctx, 0, func() (bool, error) {
			events, _, err := s.Load(ctx, "acme", "agent", r.a.AggregateID)
			return err == nil && len(events) == 1 && events[0].ID == r.ev.ID && events[0].Sequence == r.ev.Sequence, nil
		}); err != nil {
			t.Fatalf("acknowledged event of %s (%s/%d) not found after the restart: %v", r.a.AggregateID, r.ev.Stream, r.ev.Sequence, err)
		}
	}
}

// TestGroupCommitWithoutAtomicPublish: on a stream that does not allow atomic batches (not updated
// by EnsureStreams yet) appends are published one by one.
func TestGroupCommitWithoutAtomicPublish(t *testing.T) {
	_, s := groupEnv(t)
	st, err := s.JetStream().Stream(t.Context(), eventstore.StreamAgents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowAtomicPublish {
		t.Fatal("EnsureStreams did not allow atomic publish on AGENTS")
	}
	cfg.AllowAtomicPublish = false
	if _, err := s.JetStream().UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	results := appendPaused(t, s, []eventstore.Append{
		agentAppend("acme", "a", "registered", 0, "a1"),
		agentAppend("acme", "b", "registered", 0, "b1"),
		agentAppend("acme", "c", "registered", 0, "c1"),
	})
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("append to %s: %v", r.a.AggregateID, r.err)
		}
		checkStored(t, s, r.ev)
		if id := batchIDOf(t, s.JetStream(), r.ev.Sequence); id != "" {
			t.Fatalf("event of %s stored in batch %s on a stream without atomic publish", r.a.AggregateID, id)
		}
	}
	// EnsureStreams allows it again.
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.AllowAtomicPublish {
		t.Fatal("EnsureStreams did not allow atomic publish on the existing AGENTS")
	}
}
