package ingest_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// directory returns the agents projection knowing agent etl (owner alice, prod) with client
// etl-client.
func directory(t *testing.T) *agents.Projection {
	t.Helper()
	p := agents.New()
	for i, m := range []struct {
		typ string
		msg proto.Message
	}{
		{agents.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: "tenants/acme/agents/etl", Owner: "alice@acme.example",
			Environment: registryv1.Environment_ENVIRONMENT_PROD, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH}}},
		{agents.EventClientCreated, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "etl-client", Tenant: "acme", Agent: "tenants/acme/agents/etl"}}},
	} {
		data, err := proto.Marshal(m.msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(t.Context(), eventstore.Event{ID: m.typ, Type: m.typ, Metadata: eventstore.Metadata{Tenant: "acme"}, Sequence: uint64(i + 1),
			DataSchema: string(m.msg.ProtoReflect().Descriptor().FullName()), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// stored collects the rows OnStored receives.
type stored struct {
	mu   sync.Mutex
	rows []store.Event
}

func (s *stored) add(_ context.Context, rows []store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, rows...)
}

func (s *stored) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

func runConsumer(t *testing.T, cfg ingest.Config) {
	t.Helper()
	c, err := ingest.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
}

// TestIngestEnrichesAndFlagsGhosts: rows of a registered agent (named by its agent name or only by
// its client id) get its owner and environment; rows of an unknown agent or client are stored and
// flagged, and counted; OnStored sees every stored row with its source network.
func TestIngestEnrichesAndFlagsGhosts(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	var seen stored
	ready := make(chan struct{})
	runConsumer(t, ingest.Config{Source: h.es, Store: h.store, Logger: quiet, Registerer: reg, Directory: directory(t), OnStored: seen.add,
		Ready: func(ctx context.Context) error {
			select {
			case <-ready:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}}
	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/etl-client", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "etl-client", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Audiences: []string{"https://warehouse.example"},
		Scopes: []string{"warehouse.read"}, RemoteAddr: "10.1.2.3:55000"}, md)
	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme/clients/nobody", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "nobody", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client"}, md)
	now := time.Now()
	access := &monitorv1.RecordAccessRequest{Parent: "tenants/acme", BatchId: "7b0e5f43-7c1d-4e98-a36f-4d8e1b90c7a2", Events: []*monitorv1.AccessEvent{
		{EventId: "11111111-1111-4111-8111-111111111111", Time: timestamppb.New(now), Tenant: "acme", Agent: "tenants/acme/agents/etl", ClientId: "etl-client",
			Resource: "/orders", Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, ResponseBytes: 4096, Rows: 40,
			Latency: durationpb.New(2 * time.Millisecond), SourceAddress: "2001:db8:7:1::9", TraceId: "trace-1", OnBehalfOf: "bob"},
		{EventId: "22222222-2222-4222-8222-222222222222", Time: timestamppb.New(now), Tenant: "acme", Agent: "tenants/acme/agents/shadow", ClientId: "shadow",
			Resource: "/orders", Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED, Reason: "TOKEN_INVALID"},
	}}
	h.publish(t, "telemetry.acme.access.recorded", ingest.TypeAccessRecorded, "tenants/acme/clients/orders-api", access,
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorService}})
	close(ready)

	rows := h.rows(t, "acme", 4)
	byKey := map[string]store.Event{}
	for _, r := range rows {
		byKey[r.Kind+"/"+r.ClientID] = r
	}
	tests := []struct {
		key                      string
		wantKnown                bool
		wantAgent, wantOwner     string
		wantEnv, wantNet, wantRe string
	}{
		{"token.requested/etl-client", true, "tenants/acme/agents/etl", "alice@acme.example", "prod", "10.1.2.0/24", "https://warehouse.example"},
		{"token.requested/nobody", false, "", "", "", "", ""},
		{"access/etl-client", true, "tenants/acme/agents/etl", "alice@acme.example", "prod", "2001:db8:7::/48", "/orders"},
		{"access/shadow", false, "tenants/acme/agents/shadow", "", "", "", "/orders"},
	}
	for _, tt := range tests {
		r, ok := byKey[tt.key]
		if !ok {
			t.Errorf("no %s row in %+v", tt.key, rows)
			continue
		}
		if r.AgentKnown != tt.wantKnown || r.Agent != tt.wantAgent || r.Owner != tt.wantOwner || r.Environment != tt.wantEnv ||
			r.SourceNetwork != tt.wantNet || r.Resource != tt.wantRe {
			t.Errorf("%s row = %+v; want known %v, agent %q, owner %q, environment %q, network %q, resource %q",
				tt.key, r, tt.wantKnown, tt.wantAgent, tt.wantOwner, tt.wantEnv, tt.wantNet, tt.wantRe)
		}
	}
	if a := byKey["access/etl-client"]; a.Bytes != 4096 || a.Rows != 40 || a.LatencyUS != 2000 || a.TraceID != "trace-1" || a.OnBehalfOf != "bob" || a.Action != "GET" {
		t.Errorf("access row = %+v", a)
	}
	if d := byKey["access/shadow"]; d.Outcome != "denied" || !strings.Contains(d.Detail, "TOKEN_INVALID") {
		t.Errorf("denied access row = %+v, want the reason in its detail", d)
	}
	testkit.Eventually(t, testkit.DefaultWait, "OnStored to see every row", func() (bool, error) { return seen.len() == 4, nil })
	seen.mu.Lock()
	for _, r := range seen.rows {
		if r.ClientID == "etl-client" && r.SourceNetwork == "" {
			t.Errorf("OnStored row without its source network: %+v", r)
		}
	}
	seen.mu.Unlock()
	if n := total(t, reg, "monitor_telemetry_ghost_rows_total"); n != 2 {
		t.Errorf("ghost rows counted: %v, want 2", n)
	}
}

// TestIngestRefusesMalformedEvents: events whose rows the store would refuse (negative rows, a
// scope over its bound; an event without a tenant is refused the same way, see TestMapRejects) go to the failed-event log with the reason at once and are
// counted; the events after them are stored.
func TestIngestRefusesMalformedEvents(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	runConsumer(t, ingest.Config{Source: h.es, Store: h.store, Logger: quiet, Registerer: reg})
	negative := h.publish(t, "telemetry.acme.access.recorded", ingest.TypeAccessRecorded, "tenants/acme/clients/api", &monitorv1.RecordAccessRequest{
		Parent: "tenants/acme", BatchId: "7b0e5f43-7c1d-4e98-a36f-4d8e1b90c7a3", Events: []*monitorv1.AccessEvent{{EventId: "33333333-3333-4333-8333-333333333333",
			Time: timestamppb.Now(), Tenant: "acme", Resource: "/x", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, Rows: -5}}},
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "api", Kind: eventstore.ActorService}})
	tooLong := h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "x", Scopes: []string{strings.Repeat("s", store.MaxScopeLen+1)}}, eventstore.Metadata{Tenant: "acme"})
	h.publish(t, "telemetry.acme.token.requested", ingest.TypeTokenRequested, "tenants/acme", &issuerv1.TokenRequested{
		Tenant: "acme", ClientId: "ok", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}, eventstore.Metadata{Tenant: "acme"})
	if rows := h.rows(t, "acme", 1); rows[0].ClientID != "ok" {
		t.Fatalf("stored %+v", rows)
	}
	var failed []eventstore.FailedEvent
	testkit.Eventually(t, testkit.DefaultWait, "both malformed events in the failed-event log", func() (bool, error) {
		all, err := h.es.FailedEvents(t.Context())
		failed = all
		return len(all) == 2, err
	})
	reasons := map[string]string{}
	for _, f := range failed {
		reasons[f.EventID] = f.Error
		if f.Deliveries != 1 {
			t.Errorf("%s delivered %d times before the log, want 1 (permanent)", f.EventID, f.Deliveries)
		}
	}
	if !strings.Contains(reasons[negative.ID], "rows") {
		t.Errorf("negative rows reason = %q, want it to name the rows", reasons[negative.ID])
	}
	if !strings.Contains(reasons[tooLong.ID], "scopes") {
		t.Errorf("too-long scope reason = %q, want it to name the scopes", reasons[tooLong.ID])
	}
	if n := total(t, reg, "monitor_telemetry_events_refused_total"); n != 2 {
		t.Errorf("refused events counted: %v, want 2", n)
	}
}

// total sums the samples of the metric name in reg.
func total(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
