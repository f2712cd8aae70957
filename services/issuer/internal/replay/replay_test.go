package replay_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/testkit"

	"github.com/agentid/agentid/services/issuer/internal/replay"
)

func TestUseOnceAcrossCaches(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := context.Background()
	// Two caches on two connections, as two replicas would have.
	a := replay.New(n.JetStream(t), replay.Config{})
	b := replay.New(n.JetStream(t), replay.Config{})
	if err := a.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Use(ctx, "acme", "c1", "jti-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Use(ctx, "acme", "c1", "jti-1"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("second use = %v, want ErrReplayed", err)
	}
	// The id is scoped to tenant and client.
	for _, scope := range [][2]string{{"beta", "c1"}, {"acme", "c2"}} {
		if err := b.Use(ctx, scope[0], scope[1], "jti-1"); err != nil {
			t.Fatalf("use in %v = %v", scope, err)
		}
	}
	if a.TTL() < 5*time.Minute+30*time.Second {
		t.Fatalf("TTL %s is shorter than the assertion lifetime plus leeway", a.TTL())
	}
}

func TestConcurrentUseAcceptsExactlyOne(t *testing.T) {
	n := testkit.StartNATS(t)
	caches := []*replay.Cache{replay.New(n.JetStream(t), replay.Config{}), replay.New(n.JetStream(t), replay.Config{})}
	var ok, replayed atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			switch err := caches[i%2].Use(context.Background(), "acme", "c1", "same-jti"); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, replay.ErrReplayed):
				replayed.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || replayed.Load() != 19 {
		t.Fatalf("accepted %d, replayed %d; want 1 and 19", ok.Load(), replayed.Load())
	}
}

func TestExpiredIDsCanBeReused(t *testing.T) {
	n := testkit.StartNATS(t)
	c := replay.New(n.JetStream(t), replay.Config{TTL: time.Second})
	ctx := context.Background()
	if err := c.Use(ctx, "acme", "c1", "j"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		err := c.Use(ctx, "acme", "c1", "j")
		if err == nil {
			return
		}
		if !errors.Is(err, replay.ErrReplayed) || time.Now().After(deadline) {
			t.Fatalf("use after TTL = %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
