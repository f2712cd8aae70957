package agents_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
)

const etl = "tenants/acme/agents/etl"

func event(t *testing.T, tenant, typ string, seq uint64, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{ID: typ + "-id", Type: typ, Metadata: eventstore.Metadata{Tenant: tenant}, Sequence: seq,
		DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data}
}

func registration(name string) *registryv1.AgentRegistered {
	return &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, Owner: "alice@acme.example", Sponsor: "carol@acme.example",
		Environment: registryv1.Environment_ENVIRONMENT_PROD, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH, Scopes: []string{"warehouse.read"}}}
}

func TestProjectionFollowsTheLifecycle(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	if _, ok := p.Lookup("acme", etl); ok {
		t.Fatal("an empty projection knows etl")
	}
	steps := []struct {
		typ  string
		msg  proto.Message
		want registryv1.AgentState
	}{
		{agents.EventAgentRegistered, registration(etl), registryv1.AgentState_AGENT_STATE_PENDING},
		{agents.EventAgentActivated, &registryv1.AgentActivated{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{agents.EventAgentSuspended, &registryv1.AgentSuspended{Name: etl, Cause: "alert:a1"}, registryv1.AgentState_AGENT_STATE_SUSPENDED},
		{agents.EventAgentResumed, &registryv1.AgentResumed{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"agent.reviewed", &registryv1.AgentRejected{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE}, // ignored
		{agents.EventAgentRetirementRequested, &registryv1.AgentRetirementRequested{Name: etl}, registryv1.AgentState_AGENT_STATE_RETIRING},
		{agents.EventAgentRetired, &registryv1.AgentRetired{Name: etl}, registryv1.AgentState_AGENT_STATE_RETIRED},
	}
	for i, st := range steps {
		if err := p.Apply(ctx, event(t, "acme", st.typ, uint64(i+1), st.msg)); err != nil {
			t.Fatalf("%s: %v", st.typ, err)
		}
		info, ok := p.Lookup("acme", etl)
		if !ok || info.State != st.want {
			t.Fatalf("after %s: %+v, %v; want state %s", st.typ, info, ok, st.want)
		}
	}
	// A re-driven old event changes nothing.
	if err := p.Apply(ctx, event(t, "acme", agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: etl})); err != nil {
		t.Fatal(err)
	}
	info, _ := p.Lookup("acme", etl)
	want := agents.Info{Name: etl, Tenant: "acme", Owner: "alice@acme.example", Sponsor: "carol@acme.example", Environment: "prod",
		RiskTier: "high", State: registryv1.AgentState_AGENT_STATE_RETIRED, Scopes: []string{"warehouse.read"}, Known: true}
	if info.Name != want.Name || info.Owner != want.Owner || info.Sponsor != want.Sponsor || info.Environment != want.Environment ||
		info.RiskTier != want.RiskTier || info.State != want.State || !slices.Equal(info.Scopes, want.Scopes) || !info.Known || info.StateName() != "RETIRED" {
		t.Errorf("info = %+v, want %+v", info, want)
	}
}

func TestLookupByAgentIDAndClientID(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	for i, e := range []eventstore.Event{
		event(t, "acme", agents.EventClientCreated, 1, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "etl-client", Tenant: "acme", Agent: etl}}),
		event(t, "acme", agents.EventClientCreated, 2, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "gw", Tenant: "acme"}}),
		event(t, "acme", agents.EventClientCreated, 3, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "orphan", Tenant: "acme", Agent: "tenants/acme/agents/never"}}),
		event(t, "acme", agents.EventAgentRegistered, 1, registration(etl)),
	} {
		if err := p.Apply(ctx, e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	tests := []struct {
		tenant, key string
		wantOK      bool
	}{
		{"acme", etl, true},
		{"acme", "etl", true},
		{"acme", "etl-client", true},
		{"globex", "etl-client", false},              // client ids are per tenant
		{"globex", etl, false},                       // another tenant's name
		{"acme", "gw", true},                         // a client of no agent: known, with no agent
		{"acme", "orphan", false},                    // a client of an unregistered agent: a ghost
		{"acme", "tenants/acme/agents/ghost", false}, // never registered
		{"acme", "tenants/acme/agents/etl/x", false}, // not a name
		{"acme", "", false},
	}
	for _, tt := range tests {
		info, ok := p.Lookup(tt.tenant, tt.key)
		if ok != tt.wantOK || (ok && tt.key != "gw" && (info.Name != etl || info.Owner != "alice@acme.example")) || (tt.key == "gw" && info.Name != "") {
			t.Errorf("Lookup(%q, %q) = %+v, %v; want ok %v", tt.tenant, tt.key, info, ok, tt.wantOK)
		}
	}
}

func TestApplyRefusesAnAgentOfAnotherTenant(t *testing.T) {
	p := agents.New()
	for _, e := range []eventstore.Event{
		event(t, "globex", agents.EventAgentRegistered, 1, registration(etl)),
		event(t, "globex", agents.EventAgentSuspended, 2, &registryv1.AgentSuspended{Name: etl}),
		event(t, "globex", agents.EventClientCreated, 3, &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "x", Tenant: "globex", Agent: etl}}),
	} {
		if err := p.Apply(context.Background(), e); !eventstore.IsPermanent(err) {
			t.Errorf("%s of another tenant: err = %v, want a permanent error", e.Type, err)
		}
	}
	if p.Len() != 0 {
		t.Errorf("the projection holds %d agents", p.Len())
	}
}

// TestRunnersFollowTheStreams runs the projection over both streams of an embedded NATS server.
func TestRunnersFollowTheStreams(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	es := eventstore.New(js)
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	p := agents.New()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for _, stream := range []string{eventstore.StreamAgents, eventstore.StreamCredentials} {
		r := es.NewRunner(p, stream, nil)
		go func() { _ = r.Run(ctx) }()
	}
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	for _, a := range []eventstore.Append{
		{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", IdempotencyKey: "r1", Type: agents.EventAgentRegistered, Subject: etl, Data: registration(etl), Metadata: md},
		{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl", ExpectedVersion: 1, IdempotencyKey: "r2", Type: agents.EventAgentSuspended, Subject: etl, Data: &registryv1.AgentSuspended{Name: etl}, Metadata: md},
		{Tenant: "acme", AggregateType: eventstore.AggregateClient, AggregateID: "etl-client", IdempotencyKey: "c1", Type: agents.EventClientCreated,
			Subject: "tenants/acme/clients/etl-client", Data: &issuerv1.ClientCreated{Client: &issuerv1.Client{ClientId: "etl-client", Tenant: "acme", Agent: etl}}, Metadata: md},
	} {
		if _, err := es.Append(t.Context(), a); err != nil {
			t.Fatalf("append %s: %v", a.Type, err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "the suspended agent by its client id", func() (bool, error) {
		info, ok := p.Lookup("acme", "etl-client")
		return ok && info.State == registryv1.AgentState_AGENT_STATE_SUSPENDED, nil
	})
}
