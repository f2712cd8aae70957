package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/telemetry"
)

// gate is a publisher that blocks until released, to fill the buffer deterministically.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	got     []string
}

func (g *gate) Publish(ctx context.Context, subject, typ, _ string, data proto.Message, _ eventstore.Metadata) (eventstore.Event, error) {
	select {
	case <-g.release:
	case <-ctx.Done():
		return eventstore.Event{}, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.got = append(g.got, subject+" "+typ+" "+data.(*issuerv1.TokenRequested).GetRequestId())
	return eventstore.Event{}, nil
}

func TestFullBufferDropsAndCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := &gate{release: make(chan struct{})}
	e, err := telemetry.New(telemetry.Config{Publisher: g, Buffer: 2, Workers: 1, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(id string) *issuerv1.TokenRequested {
		return &issuerv1.TokenRequested{Tenant: "acme", RequestId: id, Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}
	}
	// Nothing is running: two fit, the rest are dropped without blocking.
	start := time.Now()
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		e.TokenRequested("tenants/acme", eventstore.Metadata{Tenant: "acme"}, rec(id))
	}
	if time.Since(start) > time.Second {
		t.Fatal("TokenRequested blocked")
	}
	if e.Dropped() != 2 {
		t.Fatalf("dropped = %d, want 2", e.Dropped())
	}
	if got := counterValue(t, reg, "issuer_telemetry_dropped_total"); got != 2 {
		t.Fatalf("issuer_telemetry_dropped_total = %v", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	close(g.release)
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		g.mu.Lock()
		n := len(g.got)
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d events, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.got[0] != "telemetry.acme.token.requested token.requested r1" {
		t.Fatalf("published %v", g.got)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestPublishesToTheTelemetryStream(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/issuer"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := telemetry.New(telemetry.Config{Publisher: store, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	e.TokenRequested("tenants/acme/clients/c1", eventstore.Metadata{Tenant: "acme", CorrelationID: "req-1",
		Actor: eventstore.Actor{ID: "c1", Kind: eventstore.ActorAgent}},
		&issuerv1.TokenRequested{Tenant: "acme", ClientId: "c1", RequestId: "req-1", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client"})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), "telemetry.acme.token.requested")
	if err != nil {
		t.Fatalf("no telemetry stored (the shutdown drain must publish what was queued): %v", err)
	}
	ev, err := eventstore.EventFromRaw(eventstore.StreamTelemetry, msg.Sequence, msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := eventstore.DecodeAs[*issuerv1.TokenRequested](ev)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "token.requested" || ev.Subject != "tenants/acme/clients/c1" || ev.Metadata.CorrelationID != "req-1" || m.GetError() != "invalid_client" {
		t.Fatalf("event %+v payload %v", ev, m)
	}
}
