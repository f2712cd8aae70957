package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
)

// breakFailedLog deletes the failed-event bucket after the store has opened it, so that recording
// a failure fails until EnsureStreams creates the bucket again.
func breakFailedLog(t *testing.T, e *env) {
	t.Helper()
	if _, err := e.store.FailedEvents(t.Context()); err != nil { // opens the bucket
		t.Fatal(err)
	}
	if err := e.store.JetStream().DeleteKeyValue(t.Context(), eventstore.FailedEventsBucket); err != nil {
		t.Fatal(err)
	}
}

func recordErrors(t *testing.T, handler, kind string) float64 {
	t.Helper()
	v, _ := metricValue(t, "agentid_eventstore_failed_event_record_errors_total", map[string]string{"handler": handler, "kind": kind})
	return v
}

func TestConsumeKeepsEventUntilTheFailedLogRecordsIt(t *testing.T) {
	e := newEnv(t)
	breakFailedLog(t, e)
	c := newCalls()
	consumeInBackground(t, e.store, "recorder", func(_ context.Context, ev eventstore.Event) error {
		c.called(ev.Sequence)
		return eventstore.Permanent(errors.New("refused"))
	}, eventstore.WithBackoff(20*time.Millisecond))
	ev := mustAppend(t, e.store, agentAppend("acme", "kept", "registered", 0, "x"))

	// Not terminated while the log cannot record it: delivered again and again.
	waitUntil(t, 10*time.Second, "the event to be redelivered while the log is unwritable", func() bool {
		return c.count(ev.Sequence) >= 3 && recordErrors(t, "recorder", eventstore.FailedByConsumer) >= 2
	})

	if err := e.store.EnsureStreams(t.Context()); err != nil { // the log works again
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the failure to be recorded", func() bool { return len(failedFor(t, e.store, "recorder")) == 1 })
	got := failedFor(t, e.store, "recorder")[0]
	if got.Sequence != ev.Sequence || got.Error != "refused" || got.Deliveries < 3 {
		t.Errorf("failed event = %+v, want seq %d, error refused, 3 or more deliveries", got, ev.Sequence)
	}
	waitUntil(t, 10*time.Second, "the recorded event to be terminated", func() bool {
		cons, err := e.store.JetStream().Consumer(t.Context(), eventstore.StreamAgents, "recorder")
		if err != nil {
			return false
		}
		info, err := cons.Info(t.Context())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream >= ev.Sequence
	})
}

func TestRunnerHoldsAtAnEventUntilTheFailedLogRecordsIt(t *testing.T) {
	e := newEnv(t)
	breakFailedLog(t, e)
	holding := unique("holding-v1")
	p := newAgentList(holding)
	p.failOn = "poison"
	good1 := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "ok"))
	bad := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "poison"))
	good2 := mustAppend(t, e.store, agentAppend("acme", "c", "registered", 0, "ok"))
	r := e.store.NewRunner(p, eventstore.StreamAgents, nil)
	run(t, r)

	waitUntil(t, 10*time.Second, "the runner to retry recording", func() bool {
		return recordErrors(t, holding, eventstore.FailedByProjection) >= 2
	})
	if pos := r.Position(); pos >= bad.Sequence {
		t.Fatalf("Position = %d while the failure of %d is not recorded: the event was skipped silently", pos, bad.Sequence)
	}
	held := func() float64 {
		v, _ := metricValue(t, "agentid_eventstore_projection_held_sequence", map[string]string{"projection": holding, "stream": eventstore.StreamAgents})
		return v
	}
	if got := held(); got != float64(bad.Sequence) {
		t.Fatalf("held-sequence gauge = %v while held at %d", got, bad.Sequence)
	}

	if err := e.store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitFor(ctxTimeout(t, 20*time.Second), good2.Sequence); err != nil {
		t.Fatal(err)
	}
	if got := held(); got != 0 {
		t.Fatalf("held-sequence gauge = %v after the failure was recorded, want 0", got)
	}
	if got := failedFor(t, e.store, holding); len(got) != 1 || got[0].Sequence != bad.Sequence {
		t.Fatalf("failed events = %+v, want the one at %d", got, bad.Sequence)
	}
	if _, applied := p.snapshot(); !slices.Equal(applied, []uint64{good1.Sequence, good2.Sequence}) {
		t.Errorf("applied %v, want %v", applied, []uint64{good1.Sequence, good2.Sequence})
	}
}

// TestLongErrorsAreTruncatedInTheFailedLog: a handler error far larger than a NATS message may be is
// cut, so that the event can be recorded and is never held for good.
func TestLongErrorsAreTruncatedInTheFailedLog(t *testing.T) {
	e := newEnv(t)
	huge := strings.Repeat("x", 2<<20)
	consumeInBackground(t, e.store, "verbose", func(context.Context, eventstore.Event) error {
		return eventstore.Permanent(errors.New(huge))
	})
	ev := mustAppend(t, e.store, agentAppend("acme", "loud", "registered", 0, "x"))
	waitUntil(t, 20*time.Second, "the failure to be recorded", func() bool { return len(failedFor(t, e.store, "verbose")) == 1 })
	got := failedFor(t, e.store, "verbose")[0]
	if got.Sequence != ev.Sequence || len(got.Error) == 0 || len(got.Error) > 4<<10 {
		t.Fatalf("recorded %d with an error of %d bytes, want %d with at most 4 KiB", got.Sequence, len(got.Error), ev.Sequence)
	}
}

func TestStaleRedriveClaimIsTakenOver(t *testing.T) {
	e := newEnv(t, eventstore.WithRedriveClaimTimeout(300*time.Millisecond))
	ev := mustAppend(t, e.store, agentAppend("acme", "stale", "registered", 0, "x"))
	key := eventstore.FailedEventKey("claimer", eventstore.StreamAgents, ev.Sequence)

	// A first consumer refuses the event, and it is recorded.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.store.Consume(ctx, "claimer", eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject("agent")},
			func(context.Context, eventstore.Event) error { return eventstore.Permanent(errors.New("refused")) })
	}()
	waitUntil(t, 10*time.Second, "the failure to be recorded", func() bool { return len(failedFor(t, e.store, "claimer")) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A retry was requested and claimed by a consumer that stopped mid-retry, a moment ago.
	kv, err := e.store.JetStream().KeyValue(t.Context(), eventstore.FailedEventsBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var fe eventstore.FailedEvent
	if err := json.Unmarshal(entry.Value(), &fe); err != nil {
		t.Fatal(err)
	}
	fe.RetryRequestedAt = time.Now().UTC()
	fe.RetryingSince = time.Now().UTC()
	b, err := json.Marshal(fe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), key, b); err != nil {
		t.Fatal(err)
	}

	// A consumer started while the claim holds takes the retry on once it runs out.
	c := newCalls()
	consumeInBackground(t, e.store, "claimer", func(_ context.Context, ev eventstore.Event) error {
		c.called(ev.Sequence)
		c.succeeded(ev.Sequence)
		return nil
	})
	waitUntil(t, 10*time.Second, "the stale claim to be taken over and the retry to succeed", func() bool {
		return c.done(ev.Sequence) && len(failedFor(t, e.store, "claimer")) == 0
	})
}

// holdingList is an agentList whose Apply blocks on the value "hold" until released.
type holdingList struct {
	*agentList
	holding chan struct{} // closed when Apply reaches "hold"
	release chan struct{}
	once    sync.Once
}

func (p *holdingList) Apply(ctx context.Context, e eventstore.Event) error {
	if valueOf(e) == "hold" {
		p.once.Do(func() { close(p.holding) })
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.agentList.Apply(ctx, e)
}

func TestRedriveReachesEveryReplicaOfAProjection(t *testing.T) {
	e := newEnv(t)
	bad := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "poison"))
	hold := mustAppend(t, e.store, agentAppend("acme", "h", "registered", 0, "hold"))
	key := eventstore.FailedEventKey("shared-v1", eventstore.StreamAgents, bad.Sequence)

	a := newAgentList("shared-v1")
	a.failOn = "poison"
	ra := e.store.NewRunner(a, eventstore.StreamAgents, nil)
	b := &holdingList{agentList: newAgentList("shared-v1"), holding: make(chan struct{}), release: make(chan struct{})}
	b.failOn = "poison"
	rb := e.store.NewRunner(b, eventstore.StreamAgents, nil)
	run(t, ra)
	if err := ra.Ready(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Replica b skips the event too, then is busy (not watching the log yet).
	run(t, rb)
	select {
	case <-b.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("replica b did not reach the held event")
	}
	waitUntil(t, 10*time.Second, "the failure to be recorded", func() bool { return len(failedFor(t, e.store, "shared-v1")) == 1 })

	for _, p := range []*agentList{a, b.agentList} { // the fix, deployed to both
		p.mu.Lock()
		p.failOn = ""
		p.mu.Unlock()
	}
	if err := e.store.RetryFailedEvent(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "replica a to apply the event and remove the entry", func() bool {
		_, applied := a.snapshot()
		return slices.Contains(applied, bad.Sequence) && len(failedFor(t, e.store, "shared-v1")) == 0
	})

	close(b.release)
	if err := rb.WaitFor(ctxTimeout(t, 10*time.Second), hold.Sequence); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "replica b to apply the event too", func() bool {
		_, applied := b.snapshot()
		return slices.Contains(applied, bad.Sequence)
	})
	if got := failedFor(t, e.store, "shared-v1"); len(got) != 0 {
		t.Errorf("failed events = %+v, want none", got)
	}
}

func TestOldestUnackedAgeCountsAnEventInBackoff(t *testing.T) {
	e := newEnv(t, eventstore.WithConsumerInfoRefresh(50*time.Millisecond))
	ev := mustAppend(t, e.store, agentAppend("acme", "slow", "registered", 0, "x"))
	c := newCalls()
	consumeInBackground(t, e.store, "backing-off", func(_ context.Context, e eventstore.Event) error {
		c.called(e.Sequence)
		if e.Sequence == ev.Sequence {
			return errors.New("temporal unavailable")
		}
		c.succeeded(e.Sequence)
		return nil
	}, eventstore.WithBackoff(time.Hour)) // one event at a time
	// The next event is handled once the first one's delivery is over.
	next := mustAppend(t, e.store, agentAppend("acme", "fast", "registered", 0, "y"))
	waitUntil(t, 10*time.Second, "the next event to be handled", func() bool { return c.done(next.Sequence) })
	if n := c.count(ev.Sequence); n != 1 {
		t.Fatalf("event in back-off handled %d times, want 1", n)
	}
	// Waiting for its redelivery, not being handled: the age still counts from when it was stored.
	waitUntil(t, 10*time.Second, "the oldest unacked age to cover the event in back-off", func() bool {
		v, ok := metricValue(t, "agentid_eventstore_consumer_oldest_unacked_age_seconds", map[string]string{"consumer": "backing-off"})
		return ok && v > 0 && v >= time.Since(ev.Time).Seconds()-5
	})
	cons, err := e.store.JetStream().Consumer(t.Context(), eventstore.StreamAgents, "backing-off")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 {
		t.Errorf("NumAckPending = %d, want 1 (the event in back-off)", info.NumAckPending)
	}
}
