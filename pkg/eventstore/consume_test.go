package eventstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

func TestConsumeRetriesThenRecordsFailure(t *testing.T) {
	e := newEnv(t)
	flaky := mustAppend(t, e.store, agentAppend("acme", "flaky", "registered", 0, "flaky"))
	poison := mustAppend(t, e.store, agentAppend("acme", "poison", "registered", 0, "poison"))
	fine := mustAppend(t, e.store, agentAppend("acme", "fine", "registered", 0, "fine"))

	var (
		mu    sync.Mutex
		calls = map[uint64]int{}
		acked = map[uint64]bool{}
	)
	h := func(_ context.Context, ev eventstore.Event) error {
		mu.Lock()
		defer mu.Unlock()
		calls[ev.Sequence]++
		switch {
		case ev.Sequence == poison.Sequence:
			return errors.New("workflow start refused")
		case ev.Sequence == flaky.Sequence && calls[ev.Sequence] == 1:
			return errors.New("temporal unavailable")
		}
		acked[ev.Sequence] = true
		return nil
	}
	opts := []eventstore.ConsumeOption{
		eventstore.WithMaxDeliver(3), eventstore.WithBackoff(10*time.Millisecond, 20*time.Millisecond), eventstore.WithAckWait(2 * time.Second),
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.store.Consume(ctx, "provisioner", eventstore.StreamAgents, []string{"agentid.*.agent.*.registered"}, h, opts...)
	}()

	deadline := time.Now().Add(testkit.DefaultWait)
	var failed []eventstore.FailedEvent
	for time.Now().Before(deadline) {
		var err error
		if failed, err = e.store.FailedEvents(t.Context()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		ok := len(failed) == 1 && acked[flaky.Sequence] && acked[fine.Sequence]
		mu.Unlock()
		if ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for any wrong extra delivery
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	want := map[uint64]int{flaky.Sequence: 2, poison.Sequence: 3, fine.Sequence: 1}
	for seq, n := range want {
		if calls[seq] != n {
			t.Errorf("seq %d handled %d times, want %d (all: %v)", seq, calls[seq], n, calls)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("failed events = %+v, want 1", failed)
	}
	f := failed[0]
	if f.Handler != "provisioner" || f.Kind != eventstore.FailedByConsumer || f.Sequence != poison.Sequence ||
		f.Deliveries != 3 || f.Error != "workflow start refused" || f.EventID != poison.ID {
		t.Errorf("failed event = %+v", f)
	}

	// The durable consumer remembers: a new run sees only new events. (An event that reaches a
	// consumer while it shuts down comes back after the ack wait.)
	newer := mustAppend(t, e.store, agentAppend("acme", "newer", "registered", 0, "newer"))
	seen := make(chan uint64, 10)
	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := make(chan error, 1)
	go func() {
		done2 <- e.store.Consume(ctx2, "provisioner", eventstore.StreamAgents, []string{"agentid.*.agent.*.registered"},
			func(_ context.Context, ev eventstore.Event) error { seen <- ev.Sequence; return nil }, opts...)
	}()
	select {
	case seq := <-seen:
		if seq != newer.Sequence {
			t.Errorf("resumed consumer got %d first, want %d", seq, newer.Sequence)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("resumed consumer got nothing")
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-seen:
		t.Errorf("resumed consumer also got %d", seq)
	default:
	}
}

func TestConsumeSharedByReplicas(t *testing.T) {
	e := newEnv(t)
	const n = 40
	var mu sync.Mutex
	seen := map[uint64][]int{}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for replica := range 3 {
		wg.Go(func() {
			err := e.store.Consume(ctx, "shared", eventstore.StreamAgents, nil, func(_ context.Context, ev eventstore.Event) error {
				mu.Lock()
				seen[ev.Sequence] = append(seen[ev.Sequence], replica)
				mu.Unlock()
				return nil
			}, eventstore.WithConcurrency(2))
			if err != nil {
				t.Errorf("replica %d: %v", replica, err)
			}
		})
	}
	for i := range n {
		mustAppend(t, e.store, agentAppend("acme", "bot", "updated", eventstore.AnyVersion, string(rune('a'+i%26))))
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(seen) == n
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("handled %d events, want %d", len(seen), n)
	}
	for seq, by := range seen {
		if len(by) != 1 {
			t.Errorf("seq %d handled by replicas %v, want exactly one", seq, by)
		}
	}
}

func TestConsumeInvalidOptions(t *testing.T) {
	e := newEnv(t)
	h := func(context.Context, eventstore.Event) error { return nil }
	tests := []struct {
		name      string
		consumer  string
		opts      []eventstore.ConsumeOption
		wantField string
	}{
		{"name with dot", "a.b", nil, "name"},
		{"zero max deliver", "c", []eventstore.ConsumeOption{eventstore.WithMaxDeliver(0)}, "max_deliver"},
		{"no backoff", "c", []eventstore.ConsumeOption{eventstore.WithBackoff()}, "backoff"},
		{"zero concurrency", "c", []eventstore.ConsumeOption{eventstore.WithConcurrency(0)}, "concurrency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.store.Consume(t.Context(), tt.consumer, eventstore.StreamAgents, nil, h, tt.opts...)
			var ie *eventstore.InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidError on %q", err, tt.wantField)
			}
		})
	}
}
