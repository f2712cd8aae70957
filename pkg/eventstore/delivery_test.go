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

// TestHandlerSeesItsDeliveryCount: a Handler's context tells the first delivery (1) from a
// redelivery (2 after a failure), and is 0 outside a Handler.
func TestHandlerSeesItsDeliveryCount(t *testing.T) {
	e := newEnv(t)
	mustAppend(t, e.store, agentAppend("acme", "again", "registered", 0, "again"))
	var (
		mu   sync.Mutex
		seen []uint64
	)
	h := func(ctx context.Context, _ eventstore.Event) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, eventstore.Deliveries(ctx))
		if len(seen) == 1 {
			return errors.New("first delivery fails")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.store.Consume(ctx, "deliveries", eventstore.StreamAgents, nil, h,
			eventstore.WithBackoff(10*time.Millisecond, 20*time.Millisecond), eventstore.WithAckWait(2*time.Second))
	}()
	// Wait for both deliveries; what was seen is checked below either way.
	_ = testkit.Poll(t.Context(), testkit.DefaultWait, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= 2, nil
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []uint64{1, 2}) {
		t.Errorf("deliveries seen = %v, want [1 2]", seen)
	}
	if n := eventstore.Deliveries(context.Background()); n != 0 {
		t.Errorf("outside a handler: %d, want 0", n)
	}
}
