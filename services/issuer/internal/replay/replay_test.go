package replay_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

func TestUseUntilKeepsTheRecordOnlyAsLongAsTheAssertionIsUsable(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	ctx := context.Background()
	c := replay.New(js, replay.Config{SkewMargin: -1})
	if err := c.UseUntil(ctx, "acme", "c1", "short", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.UseUntil(ctx, "acme", "c1", "short", time.Now().Add(time.Second)); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("second use = %v, want ErrReplayed", err)
	}
	if err := c.UseUntil(ctx, "acme", "c1", "long", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The record of the long-lived assertion is capped at the bucket's TTL (no per-key TTL header),
	// the short one carries its own.
	stream, err := js.Stream(ctx, "KV_"+replay.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for jti, want := range map[string][]string{"short": {"1s", "2s"}, "long": {""}} {
		msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+replay.Bucket+"."+replay.Key("acme", "c1", jti))
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Header.Get("Nats-TTL"); !slices.Contains(want, got) {
			t.Fatalf("%s: Nats-TTL %q, want one of %q", jti, got, want)
		}
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		err := c.UseUntil(ctx, "acme", "c1", "short", time.Now().Add(time.Second))
		if err == nil {
			break
		}
		if !errors.Is(err, replay.ErrReplayed) || time.Now().After(deadline) {
			t.Fatalf("use after the record's lifetime = %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Use(ctx, "acme", "c1", "long"); !errors.Is(err, replay.ErrReplayed) {
		t.Fatalf("the long-lived record expired with the short one: %v", err)
	}
}

func TestConcurrentUseUntilAcceptsExactlyOne(t *testing.T) {
	n := testkit.StartNATS(t)
	caches := []*replay.Cache{replay.New(n.JetStream(t), replay.Config{}), replay.New(n.JetStream(t), replay.Config{})}
	until := time.Now().Add(90 * time.Second)
	var ok, replayed atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			switch err := caches[i%2].UseUntil(context.Background(), "acme", "c1", "same-jti", until); {
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

func TestABucketOfAnOlderIssuerGetsPerKeyLifetimes(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: replay.Bucket, History: 1, TTL: replay.DefaultTTL,
		Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	c := replay.New(js, replay.Config{})
	if err := c.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.UseUntil(ctx, "acme", "c1", "j", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+replay.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+replay.Bucket+"."+replay.Key("acme", "c1", "j"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Nats-TTL") == "" {
		t.Fatal("the updated bucket does not keep per-key lifetimes")
	}
}
