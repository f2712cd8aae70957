package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// waitUntil polls cond until it holds, failing the test with what after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, testkit.DefaultWait) // a busy machine is slow, never wrong
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consumeInBackground runs Consume until the test ends and checks that it returns nil.
func consumeInBackground(t *testing.T, s *eventstore.Store, name string, h eventstore.Handler, opts ...eventstore.ConsumeOption) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Consume(ctx, name, eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject("agent")}, h, opts...)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Consume(%s): %v", name, err)
		}
	})
}

// calls counts handler invocations per stream sequence.
type calls struct {
	mu sync.Mutex
	n  map[uint64]int
	ok map[uint64]bool
}

func newCalls() *calls { return &calls{n: map[uint64]int{}, ok: map[uint64]bool{}} }

func (c *calls) called(seq uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[seq]++
	return c.n[seq]
}

func (c *calls) succeeded(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok[seq] = true
}

func (c *calls) count(seq uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[seq]
}

func (c *calls) done(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok[seq]
}

// failedFor returns the failed-event log entries of handler.
func failedFor(t *testing.T, s *eventstore.Store, handler string) []eventstore.FailedEvent {
	t.Helper()
	list, err := s.ListFailedEvents(t.Context(), eventstore.FailedEventFilter{Handler: handler})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// metricValue returns the value of the metric name with exactly labels from the default gatherer,
// and whether it exists.
func metricValue(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// valueOf returns the string payload of ev, "" if it has none; for handlers, which must not fail
// the test from their goroutine.
func valueOf(ev eventstore.Event) string {
	v, err := eventstore.DecodeAs[*wrapperspb.StringValue](ev)
	if err != nil {
		return ""
	}
	return v.GetValue()
}

func TestIsPermanent(t *testing.T) {
	base := errors.New("bad payload")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"permanent", eventstore.Permanent(base), true},
		{"wrapped permanent", fmt.Errorf("handler: %w", eventstore.Permanent(base)), true},
		{"panic", &eventstore.PanicError{Value: "boom"}, true},
		{"context canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := eventstore.IsPermanent(tt.err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	if eventstore.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if p := eventstore.Permanent(base); !errors.Is(p, base) || p.Error() != base.Error() {
		t.Errorf("Permanent(%v) = %v, must wrap it and keep its message", base, p)
	}
}

func TestConsumeRecoversPanicAndGoesOn(t *testing.T) {
	e := newEnv(t)
	before := mustAppend(t, e.store, agentAppend("acme", "before", "registered", 0, "ok"))
	boom := mustAppend(t, e.store, agentAppend("acme", "boom", "registered", 0, "boom"))
	c := newCalls()
	h := func(_ context.Context, ev eventstore.Event) error {
		c.called(ev.Sequence)
		if valueOf(ev) == "boom" {
			var m map[string]int
			m["nil map"]++ // a real bug: assignment to a nil map
		}
		c.succeeded(ev.Sequence)
		return nil
	}
	consumeInBackground(t, e.store, "panicky", h, eventstore.WithBackoff(time.Millisecond))

	after := mustAppend(t, e.store, agentAppend("acme", "after", "registered", 0, "ok"))
	waitUntil(t, 10*time.Second, "the events around the panic to be handled", func() bool {
		return c.done(before.Sequence) && c.done(after.Sequence) && len(failedFor(t, e.store, "panicky")) == 1
	})
	// The consumer is still live: a later event is handled too.
	later := mustAppend(t, e.store, agentAppend("acme", "later", "registered", 0, "ok"))
	waitUntil(t, 10*time.Second, "an event after the panic", func() bool { return c.done(later.Sequence) })

	f := failedFor(t, e.store, "panicky")[0]
	if f.Sequence != boom.Sequence || f.Deliveries != 1 || f.Kind != eventstore.FailedByConsumer ||
		!strings.HasPrefix(f.Error, "panic: assignment to entry in nil map") || f.Key != eventstore.FailedEventKey("panicky", eventstore.StreamAgents, boom.Sequence) {
		t.Errorf("failed event = %+v", f)
	}
	if n := c.count(boom.Sequence); n != 1 {
		t.Errorf("panicking event handled %d times, want 1 (a panic is not redelivered)", n)
	}
}

func TestConsumePermanentErrorAfterOneDelivery(t *testing.T) {
	e := newEnv(t)
	bad := mustAppend(t, e.store, agentAppend("acme", "bad", "registered", 0, "bad"))
	fine := mustAppend(t, e.store, agentAppend("acme", "fine", "registered", 0, "fine"))
	c := newCalls()
	strict := unique("strict")
	consumeInBackground(t, e.store, strict, func(_ context.Context, ev eventstore.Event) error {
		c.called(ev.Sequence)
		if valueOf(ev) == "bad" {
			return fmt.Errorf("provisioning: %w", eventstore.Permanent(errors.New("unknown risk tier")))
		}
		c.succeeded(ev.Sequence)
		return nil
	}, eventstore.WithBackoff(time.Millisecond))

	waitUntil(t, 10*time.Second, "the permanent failure to be recorded", func() bool {
		return c.done(fine.Sequence) && len(failedFor(t, e.store, strict)) == 1
	})
	f := failedFor(t, e.store, strict)[0]
	if f.Sequence != bad.Sequence || f.Deliveries != 1 || f.Error != "provisioning: unknown risk tier" {
		t.Errorf("failed event = %+v, want seq %d after 1 delivery", f, bad.Sequence)
	}
	// Terminated: no redelivery reaches the handler, even after the consumer has handled more.
	next := mustAppend(t, e.store, agentAppend("acme", "next", "registered", 0, "next"))
	waitUntil(t, 10*time.Second, "a later event", func() bool { return c.done(next.Sequence) })
	if n := c.count(bad.Sequence); n != 1 {
		t.Errorf("permanently failing event handled %d times, want 1", n)
	}
	if v, _ := metricValue(t, "agentid_eventstore_failed_events_total", map[string]string{"handler": strict, "kind": "consumer"}); v != 1 {
		t.Errorf("agentid_eventstore_failed_events_total{handler=strict} = %v, want 1", v)
	}
}

func TestConsumeRetriesTransientErrorsWithoutLimit(t *testing.T) {
	e := newEnv(t)
	const failures = eventstore.LongRetryDeliveries + 2
	ev := mustAppend(t, e.store, agentAppend("acme", "stubborn", "registered", 0, "x"))
	c := newCalls()
	patient := unique("patient")
	consumeInBackground(t, e.store, patient, func(_ context.Context, got eventstore.Event) error {
		if c.called(got.Sequence) <= failures {
			return errors.New("temporal unavailable")
		}
		c.succeeded(got.Sequence)
		return nil
	}, eventstore.WithBackoff(time.Millisecond))

	waitUntil(t, 20*time.Second, "the event to succeed after many retries", func() bool { return c.done(ev.Sequence) })
	if n := c.count(ev.Sequence); n != failures+1 {
		t.Errorf("handled %d times, want %d", n, failures+1)
	}
	if got := failedFor(t, e.store, patient); len(got) != 0 {
		t.Errorf("failed events = %+v, want none", got)
	}
	tests := []struct {
		metric string
		want   float64
	}{
		{"agentid_eventstore_consumer_redeliveries_total", failures},
		// deliveries LongRetryDeliveries..failures failed "long"
		{"agentid_eventstore_consumer_long_retries_total", failures - eventstore.LongRetryDeliveries + 1},
	}
	for _, tt := range tests {
		if v, ok := metricValue(t, tt.metric, map[string]string{"consumer": patient}); !ok || v != tt.want {
			t.Errorf("%s{consumer=patient} = %v (present %v), want %v", tt.metric, v, ok, tt.want)
		}
	}
	if v, ok := metricValue(t, "agentid_eventstore_consumer_oldest_unacked_age_seconds", map[string]string{"consumer": patient}); !ok || v != 0 {
		t.Errorf("oldest unacked age after the event was acknowledged = %v (present %v), want 0", v, ok)
	}
	if _, ok := metricValue(t, "agentid_eventstore_consumer_pending_messages", map[string]string{"consumer": patient, "stream": eventstore.StreamAgents}); !ok {
		t.Error("agentid_eventstore_consumer_pending_messages{consumer=patient} missing")
	}
}

func TestConsumeLiftsTheDeliveryCapOfAnExistingConsumer(t *testing.T) {
	e := newEnv(t)
	filter := []string{eventstore.AggregateTypeSubject("agent")}
	// A consumer created by an earlier version, which gave up after 10 deliveries.
	_, err := e.store.JetStream().CreateOrUpdateConsumer(t.Context(), eventstore.StreamAgents, jetstream.ConsumerConfig{
		Durable: "legacy", FilterSubjects: filter, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: eventstore.DefaultAckWait, MaxDeliver: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := mustAppend(t, e.store, agentAppend("acme", "old", "registered", 0, "x"))
	c := newCalls()
	consumeInBackground(t, e.store, "legacy", func(_ context.Context, got eventstore.Event) error {
		c.called(got.Sequence)
		c.succeeded(got.Sequence)
		return nil
	})
	waitUntil(t, 10*time.Second, "the event", func() bool { return c.done(ev.Sequence) })
	cons, err := e.store.JetStream().Consumer(t.Context(), eventstore.StreamAgents, "legacy")
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.MaxDeliver; got != eventstore.UnlimitedDeliveries {
		t.Errorf("MaxDeliver of the existing consumer = %d, want %d", got, eventstore.UnlimitedDeliveries)
	}
}

// poisonList is a projection that panics on the value "boom".
type poisonList struct{ *agentList }

func (p poisonList) Apply(ctx context.Context, e eventstore.Event) error {
	if valueOf(e) == "boom" {
		panic(fmt.Sprintf("cannot project %s", e.ID))
	}
	return p.agentList.Apply(ctx, e)
}

func TestRunnerRecoversPanicInApply(t *testing.T) {
	e := newEnv(t)
	p := poisonList{newAgentList("explosive-v1")}
	good := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "ok"))
	boom := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "boom"))
	r := e.store.NewRunner(p, eventstore.StreamAgents, nil)
	run(t, r)
	after := mustAppend(t, e.store, agentAppend("acme", "c", "registered", 0, "ok"))
	if err := r.WaitFor(ctxTimeout(t, 10*time.Second), after.Sequence); err != nil {
		t.Fatal(err)
	}
	if _, applied := p.snapshot(); !slices.Equal(applied, []uint64{good.Sequence, after.Sequence}) {
		t.Errorf("applied %v, want %v", applied, []uint64{good.Sequence, after.Sequence})
	}
	failed := failedFor(t, e.store, "explosive-v1")
	if len(failed) != 1 || failed[0].Sequence != boom.Sequence || failed[0].Kind != eventstore.FailedByProjection ||
		failed[0].Error != "panic: cannot project "+boom.ID {
		t.Fatalf("failed events = %+v, want the panic on %d", failed, boom.Sequence)
	}
	if v, ok := metricValue(t, "agentid_eventstore_projection_position", map[string]string{"projection": "explosive-v1", "stream": eventstore.StreamAgents}); !ok || v < float64(after.Sequence) {
		t.Errorf("projection position metric = %v (present %v), want >= %d", v, ok, after.Sequence)
	}
}
