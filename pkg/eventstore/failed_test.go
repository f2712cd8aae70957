package eventstore_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
)

func TestRetryFailedEventRedrivesConsumer(t *testing.T) {
	e := newEnv(t)
	var fixed atomic.Bool
	c := newCalls()
	h := func(_ context.Context, ev eventstore.Event) error {
		c.called(ev.Sequence)
		if valueOf(ev) == "needs-fix" && !fixed.Load() {
			return eventstore.Permanent(errors.New("no handler for risk tier"))
		}
		c.succeeded(ev.Sequence)
		return nil
	}
	// Two replicas of the consumer: a requested retry runs once, in one of them.
	consumeInBackground(t, e.store, "redrivable", h)
	consumeInBackground(t, e.store, "redrivable", h)
	// Another consumer whose failure must not be touched by operations filtered on "redrivable".
	consumeInBackground(t, e.store, "bystander", func(_ context.Context, ev eventstore.Event) error {
		if valueOf(ev) == "needs-fix" {
			return eventstore.Permanent(errors.New("bystander refuses"))
		}
		return nil
	})

	ev := mustAppend(t, e.store, agentAppend("acme", "fixme", "registered", 0, "needs-fix"))
	key := eventstore.FailedEventKey("redrivable", eventstore.StreamAgents, ev.Sequence)
	waitUntil(t, 10*time.Second, "both failures to be recorded", func() bool {
		all, err := e.store.FailedEvents(t.Context())
		return err == nil && len(all) == 2
	})
	byStream, err := e.store.ListFailedEvents(t.Context(), eventstore.FailedEventFilter{Handler: "redrivable", Stream: eventstore.StreamAgents})
	if err != nil || len(byStream) != 1 || byStream[0].Key != key {
		t.Fatalf("ListFailedEvents(redrivable, AGENTS) = %+v, %v; want the one entry %s", byStream, err, key)
	}
	if other, err := e.store.ListFailedEvents(t.Context(), eventstore.FailedEventFilter{Stream: eventstore.StreamCredentials}); err != nil || len(other) != 0 {
		t.Fatalf("ListFailedEvents(stream CREDENTIALS) = %+v, %v; want none", other, err)
	}

	// A retry before the fix fails again: the entry stays with the attempt counted.
	if err := e.store.RetryFailedEvent(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the retry to fail again", func() bool {
		got := failedFor(t, e.store, "redrivable")
		return len(got) == 1 && got[0].Retries == 1 && got[0].RetryRequestedAt.IsZero()
	})
	if n := c.count(ev.Sequence); n != 2 {
		t.Errorf("handler ran %d times after a failed retry, want 2 (one delivery, one retry)", n)
	}

	// Fixed: the retry succeeds and the entry disappears; the bystander's entry stays.
	fixed.Store(true)
	n, err := e.store.RetryFailedEvents(t.Context(), eventstore.FailedEventFilter{Handler: "redrivable"})
	if err != nil || n != 1 {
		t.Fatalf("RetryFailedEvents(redrivable) = %d, %v; want 1", n, err)
	}
	waitUntil(t, 10*time.Second, "the retried event to be handled and its entry removed", func() bool {
		return c.done(ev.Sequence) && len(failedFor(t, e.store, "redrivable")) == 0
	})
	if n := c.count(ev.Sequence); n != 3 {
		t.Errorf("handler ran %d times, want 3 (one delivery, two retries, each once across the replicas)", n)
	}
	if got := failedFor(t, e.store, "bystander"); len(got) != 1 || got[0].Retries != 0 || !got[0].RetryRequestedAt.IsZero() {
		t.Errorf("bystander's entry = %+v, want it untouched", got)
	}
	waitUntil(t, 10*time.Second, "the failed-events gauge to drop", func() bool {
		v, ok := metricValue(t, "agentid_eventstore_failed_events", map[string]string{"handler": "redrivable"})
		return ok && v == 0
	})
	if v, ok := metricValue(t, "agentid_eventstore_failed_events", map[string]string{"handler": "bystander"}); !ok || v != 1 {
		t.Errorf("agentid_eventstore_failed_events{handler=bystander} = %v (present %v), want 1", v, ok)
	}

	// Unknown keys are named as such; clear removes what is left.
	if err := e.store.RetryFailedEvent(t.Context(), key); !errors.Is(err, eventstore.ErrFailedEventNotFound) {
		t.Errorf("RetryFailedEvent(removed entry) = %v, want ErrFailedEventNotFound", err)
	}
	if err := e.store.ClearFailedEventKey(t.Context(), "nobody.AGENTS.1"); !errors.Is(err, eventstore.ErrFailedEventNotFound) {
		t.Errorf("ClearFailedEventKey(unknown) = %v, want ErrFailedEventNotFound", err)
	}
	if n, err := e.store.ClearFailedEvents(t.Context(), eventstore.FailedEventFilter{}); err != nil || n != 1 {
		t.Errorf("ClearFailedEvents(all) = %d, %v; want 1", n, err)
	}
	if all, err := e.store.FailedEvents(t.Context()); err != nil || len(all) != 0 {
		t.Errorf("after clear: %+v, %v", all, err)
	}
}

func TestRetryFailedEventReappliesToProjection(t *testing.T) {
	e := newEnv(t)
	p := newAgentList("fixable-v1")
	p.failOn = "poison"
	good1 := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "ok"))
	bad := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "poison"))
	good2 := mustAppend(t, e.store, agentAppend("acme", "c", "registered", 0, "ok"))
	r := e.store.NewRunner(p, eventstore.StreamAgents, nil)
	run(t, r)
	if err := r.WaitFor(ctxTimeout(t, 10*time.Second), good2.Sequence); err != nil {
		t.Fatal(err)
	}
	key := eventstore.FailedEventKey("fixable-v1", eventstore.StreamAgents, bad.Sequence)
	waitUntil(t, 10*time.Second, "the failure to be recorded", func() bool { return len(failedFor(t, e.store, "fixable-v1")) == 1 })

	p.mu.Lock()
	p.failOn = "" // the fix
	p.mu.Unlock()
	if err := e.store.RetryFailedEvent(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the entry to be removed", func() bool { return len(failedFor(t, e.store, "fixable-v1")) == 0 })
	// Applied late: after the events that follow it in the stream; the position does not move back.
	if _, applied := p.snapshot(); !slices.Equal(applied, []uint64{good1.Sequence, good2.Sequence, bad.Sequence}) {
		t.Errorf("applied %v, want %v", applied, []uint64{good1.Sequence, good2.Sequence, bad.Sequence})
	}
	if pos := r.Position(); pos < good2.Sequence {
		t.Errorf("Position = %d, want >= %d", pos, good2.Sequence)
	}
}
