package agents_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
)

// TestProjectionFollowsTheRecord: a proposal is PROPOSED, a submission PENDING, an update changes
// the owner, environment, scopes and risk tier telemetry is enriched with (and keeps the state), an
// expiry is EXPIRED.
func TestProjectionFollowsTheRecord(t *testing.T) {
	ctx := context.Background()
	p := agents.New()
	reg := registration(etl)
	reg.Agent.State = registryv1.AgentState_AGENT_STATE_PROPOSED
	upd := &registryv1.AgentUpdated{Name: etl, ChangedFields: []string{"owner", "scopes", "purpose"},
		Agent:          &registryv1.Agent{Owner: "dave@acme.example", Sponsor: "ignored@acme.example", Scopes: []string{"warehouse.read", "report.create"}, Purpose: "p"},
		Classification: &registryv1.Classification{DerivedRiskTier: registryv1.RiskTier_RISK_TIER_MODERATE, OverrideRiskTier: registryv1.RiskTier_RISK_TIER_LOW}}
	steps := []struct {
		typ  string
		msg  proto.Message
		want registryv1.AgentState
	}{
		{agents.EventAgentRegistered, reg, registryv1.AgentState_AGENT_STATE_PROPOSED},
		{agents.EventAgentSubmitted, &registryv1.AgentSubmitted{Name: etl}, registryv1.AgentState_AGENT_STATE_PENDING},
		{agents.EventAgentActivated, &registryv1.AgentActivated{Name: etl}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{agents.EventAgentUpdated, upd, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{agents.EventAgentExpired, &registryv1.AgentExpired{Name: etl}, registryv1.AgentState_AGENT_STATE_EXPIRED},
	}
	for i, st := range steps {
		if err := p.Apply(ctx, event(t, "acme", st.typ, uint64(i+1), st.msg)); err != nil {
			t.Fatalf("%s: %v", st.typ, err)
		}
		if info, ok := p.Lookup("acme", etl); !ok || info.State != st.want {
			t.Fatalf("after %s: %+v; want state %s", st.typ, info, st.want)
		}
	}
	info, _ := p.Lookup("acme", etl)
	if info.Owner != "dave@acme.example" || info.Sponsor != "carol@acme.example" || info.RiskTier != "low" || info.Environment != "prod" ||
		!slices.Equal(info.Scopes, []string{"warehouse.read", "report.create"}) {
		t.Fatalf("after the update: %+v", info)
	}
	// A re-driven old update changes nothing; one of another tenant's agent is refused.
	old := proto.CloneOf(upd)
	old.Agent.Owner = "mallory@acme.example"
	if err := p.Apply(ctx, event(t, "acme", agents.EventAgentUpdated, 4, old)); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, event(t, "globex", agents.EventAgentUpdated, 9, upd)); err == nil {
		t.Fatal("an update of acme's agent in a globex event was applied")
	}
	if info, _ := p.Lookup("acme", etl); info.Owner != "dave@acme.example" {
		t.Fatalf("owner %s after a re-driven or refused update", info.Owner)
	}
}
