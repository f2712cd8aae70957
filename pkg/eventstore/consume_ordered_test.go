package eventstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

func TestSubjectAggregateKey(t *testing.T) {
	for _, tc := range []struct{ subject, want string }{
		{"agentid.acme.agent.a1.registered", "agentid.acme.agent.a1"},
		{"agentid.acme.agent.a1.retirement_requested", "agentid.acme.agent.a1"},
		{"plain", "plain"},
	} {
		if got := eventstore.SubjectAggregateKey(tc.subject); got != tc.want {
			t.Errorf("SubjectAggregateKey(%q) = %q, want %q", tc.subject, got, tc.want)
		}
	}
}

// TestConsumeOrderKeyKeepsOrderPerKey: with concurrency and WithOrderKey, the events of one agent
// are handled one after another in stream order (the second not before the first returned, also
// when the first is blocked), while another agent's event is handled meanwhile.
func TestConsumeOrderKeyKeepsOrderPerKey(t *testing.T) {
	e := newEnv(t)
	a1 := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "a1"))
	a2 := mustAppend(t, e.store, agentAppend("acme", "a", "activated", a1.Sequence, "a2"))
	a3 := mustAppend(t, e.store, agentAppend("acme", "a", "retirement_requested", a2.Sequence, "a3"))
	b1 := mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "b1"))

	release := make(chan struct{})
	var (
		mu      sync.Mutex
		started []uint64 // handler starts, in order
		running = map[string]int{}
		overlap []string // an agent with two handlers running at once
	)
	h := func(_ context.Context, ev eventstore.Event) error {
		mu.Lock()
		started = append(started, ev.Sequence)
		running[ev.AggregateID]++
		if running[ev.AggregateID] > 1 {
			overlap = append(overlap, ev.AggregateID)
		}
		mu.Unlock()
		if ev.Sequence == a1.Sequence {
			<-release
		}
		mu.Lock()
		running[ev.AggregateID]--
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.store.Consume(ctx, "ordered", eventstore.StreamAgents, []string{"agentid.*.agent.>"}, h,
			eventstore.WithConcurrency(8), eventstore.WithOrderKey(eventstore.SubjectAggregateKey))
	}()
	has := func(seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(started, seq)
	}
	// b's event is handled while a's first one blocks: other keys are not held up.
	testkit.Eventually(t, testkit.DefaultWait, "b1 handled while a1 blocks", func() (bool, error) {
		return has(b1.Sequence) && has(a1.Sequence), nil
	})
	if has(a2.Sequence) || has(a3.Sequence) {
		t.Errorf("a's later events were handled while its first one was still running: %v", started)
	}
	close(release)
	testkit.Eventually(t, testkit.DefaultWait, "every event handled", func() (bool, error) {
		return has(a2.Sequence) && has(a3.Sequence), nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var order []uint64
	for _, s := range started {
		if s != b1.Sequence {
			order = append(order, s)
		}
	}
	if want := []uint64{a1.Sequence, a2.Sequence, a3.Sequence}; !slices.Equal(order, want) {
		t.Errorf("agent a's events handled in order %v, want %v", order, want)
	}
	if len(overlap) > 0 {
		t.Errorf("handlers of one agent ran at once: %v", overlap)
	}
}

// TestConsumeOrderKeyHoldsKeyAfterFailure: when the handler of an agent's first event fails (the
// event is left for redelivery), the agent's later events are not run before the failed one has
// been handled again and succeeded, although they were taken meanwhile; another agent's event is
// not held up.
func TestConsumeOrderKeyHoldsKeyAfterFailure(t *testing.T) {
	e := newEnv(t)
	a1 := mustAppend(t, e.store, agentAppend("acme", "a", "registered", 0, "a1"))
	a2 := mustAppend(t, e.store, agentAppend("acme", "a", "retirement_requested", a1.Sequence, "a2"))
	a3 := mustAppend(t, e.store, agentAppend("acme", "a", "retired", a2.Sequence, "a3"))
	mustAppend(t, e.store, agentAppend("acme", "b", "registered", 0, "b1"))

	var (
		mu       sync.Mutex
		started  []uint64 // handler starts of agent a, in order
		handled  []uint64 // successful handlings of agent a, in order
		bHandled bool
		failed   bool
	)
	h := func(_ context.Context, ev eventstore.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.AggregateID == "b" {
			bHandled = true
			return nil
		}
		started = append(started, ev.Sequence)
		if ev.Sequence == a1.Sequence && !failed {
			failed = true
			return errors.New("registry unavailable")
		}
		handled = append(handled, ev.Sequence)
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.store.Consume(ctx, "ordered-hold", eventstore.StreamAgents, []string{"agentid.*.agent.>"}, h,
			eventstore.WithConcurrency(8), eventstore.WithOrderKey(eventstore.SubjectAggregateKey),
			eventstore.WithBackoff(100*time.Millisecond))
	}()
	testkit.Eventually(t, testkit.DefaultWait, "every event handled", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 3 && bHandled, nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{a1.Sequence, a1.Sequence, a2.Sequence, a3.Sequence}; !slices.Equal(started, want) {
		t.Errorf("agent a's handler runs %v, want %v (a1 failing, then a1 again before a2 and a3)", started, want)
	}
	if want := []uint64{a1.Sequence, a2.Sequence, a3.Sequence}; !slices.Equal(handled, want) {
		t.Errorf("agent a's events handled in order %v, want %v", handled, want)
	}
}
