package readmodel_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/readmodel"
)

const name = "tenants/acme/agents/a1"

func agentEvent(t *testing.T, seq uint64, typ string, data proto.Message) eventstore.Event {
	t.Helper()
	b, err := proto.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: typ + "-" + string(rune('a'+seq)), Type: typ, Time: time.Unix(int64(seq), 0).UTC(),
		Metadata: eventstore.Metadata{Tenant: "acme"}, AggregateType: eventstore.AggregateAgent, AggregateID: "a1",
		Stream: eventstore.StreamAgents, Sequence: seq,
		DataSchema: string(data.ProtoReflect().Descriptor().FullName()), Data: b,
	}
}

// TestAgentsIgnoreOlderEvents: an agent's events apply in stream order; one at or below the last
// applied sequence (a redelivery, a re-driven failed event) never moves the state back.
func TestAgentsIgnoreOlderEvents(t *testing.T) {
	registered := agentEvent(t, 1, readmodel.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, AgentId: "a1", Tenant: "acme"}})
	activated := agentEvent(t, 2, readmodel.EventAgentActivated, &registryv1.AgentActivated{Name: name})
	retiring := agentEvent(t, 3, readmodel.EventAgentRetirementRequested, &registryv1.AgentRetirementRequested{Name: name, Reason: "done"})
	retired := agentEvent(t, 4, readmodel.EventAgentRetired, &registryv1.AgentRetired{Name: name})
	suspended := agentEvent(t, 3, readmodel.EventAgentSuspended, &registryv1.AgentSuspended{Name: name, Reason: "alert"})
	resumed := agentEvent(t, 4, readmodel.EventAgentResumed, &registryv1.AgentResumed{Name: name, Reason: "cleared"})
	tests := []struct {
		name      string
		events    []eventstore.Event
		want      registryv1.AgentState
		wantSince time.Time
	}{
		{"in order", []eventstore.Event{registered, activated, retiring, retired}, registryv1.AgentState_AGENT_STATE_RETIRED, retired.Time},
		{"registered again after retired", []eventstore.Event{registered, activated, retiring, retired, registered}, registryv1.AgentState_AGENT_STATE_RETIRED, retired.Time},
		{"an older event late", []eventstore.Event{registered, activated, retiring, activated}, registryv1.AgentState_AGENT_STATE_RETIRING, retiring.Time},
		{"the same event twice", []eventstore.Event{registered, activated, activated}, registryv1.AgentState_AGENT_STATE_ACTIVE, activated.Time},
		{"suspended", []eventstore.Event{registered, activated, suspended}, registryv1.AgentState_AGENT_STATE_SUSPENDED, suspended.Time},
		{"resumed", []eventstore.Event{registered, activated, suspended, resumed}, registryv1.AgentState_AGENT_STATE_ACTIVE, resumed.Time},
		{"a late suspension after the resumption", []eventstore.Event{registered, activated, suspended, resumed, suspended}, registryv1.AgentState_AGENT_STATE_ACTIVE, resumed.Time},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := readmodel.New()
			p := readmodel.Agents{M: m}
			for _, e := range tt.events {
				if err := p.Apply(t.Context(), e); err != nil {
					t.Fatalf("apply %s: %v", e.Type, err)
				}
			}
			a, ok := m.Agent("acme", "a1")
			if !ok || a.State != tt.want || !a.Since.Equal(tt.wantSince) {
				t.Fatalf("agent = %+v, want %v since %v", a, tt.want, tt.wantSince)
			}
			if a.RetireReason != "" && a.RetireEventID != retiring.ID {
				t.Errorf("retirement of %+v from another event", a)
			}
		})
	}
}

// TestLateRegistrationFillsItsFields: a registration the projection skipped once and applies late
// (an operator's retry) fills in the fields it owns, without moving the state back.
func TestLateRegistrationFillsItsFields(t *testing.T) {
	registered := agentEvent(t, 1, readmodel.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{
		Name: name, AgentId: "a1", Tenant: "acme", RiskTier: registryv1.RiskTier_RISK_TIER_HIGH}})
	activated := agentEvent(t, 2, readmodel.EventAgentActivated, &registryv1.AgentActivated{Name: name})
	m := readmodel.New()
	p := readmodel.Agents{M: m}
	for _, e := range []eventstore.Event{activated, registered} {
		if err := p.Apply(t.Context(), e); err != nil {
			t.Fatalf("apply %s: %v", e.Type, err)
		}
	}
	a, ok := m.Agent("acme", "a1")
	if !ok || a.State != registryv1.AgentState_AGENT_STATE_ACTIVE || a.RegisteredEventID != registered.ID || a.RiskTier == "" {
		t.Fatalf("agent = %+v, want ACTIVE with the late registration's event id and risk tier", a)
	}
}

// TestAgentsFollowTheRecord: a proposal is PROPOSED, a submission PENDING, an update's
// reclassification changes the risk tier (not the state; a late older one changes nothing), an
// expiry is EXPIRED.
func TestAgentsFollowTheRecord(t *testing.T) {
	m := readmodel.New()
	p := readmodel.Agents{M: m}
	cls := func(tier registryv1.RiskTier) *registryv1.Classification {
		return &registryv1.Classification{DerivedRiskTier: registryv1.RiskTier_RISK_TIER_LOW, OverrideRiskTier: tier}
	}
	steps := []struct {
		e     eventstore.Event
		state registryv1.AgentState
		tier  string
	}{
		{agentEvent(t, 1, readmodel.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, State: registryv1.AgentState_AGENT_STATE_PROPOSED, RiskTier: registryv1.RiskTier_RISK_TIER_LOW}}),
			registryv1.AgentState_AGENT_STATE_PROPOSED, "low"},
		{agentEvent(t, 2, readmodel.EventAgentSubmitted, &registryv1.AgentSubmitted{Name: name}), registryv1.AgentState_AGENT_STATE_PENDING, "low"},
		{agentEvent(t, 3, readmodel.EventAgentActivated, &registryv1.AgentActivated{Name: name}), registryv1.AgentState_AGENT_STATE_ACTIVE, "low"},
		{agentEvent(t, 4, readmodel.EventAgentUpdated, &registryv1.AgentUpdated{Name: name, ChangedFields: []string{"purpose"}}), registryv1.AgentState_AGENT_STATE_ACTIVE, "low"},
		{agentEvent(t, 5, readmodel.EventAgentUpdated, &registryv1.AgentUpdated{Name: name, ChangedFields: []string{"data_sensitivity"}, Classification: cls(registryv1.RiskTier_RISK_TIER_HIGH)}),
			registryv1.AgentState_AGENT_STATE_ACTIVE, "high"},
		{agentEvent(t, 4, readmodel.EventAgentUpdated, &registryv1.AgentUpdated{Name: name, ChangedFields: []string{"data_sensitivity"}, Classification: cls(registryv1.RiskTier_RISK_TIER_MODERATE)}),
			registryv1.AgentState_AGENT_STATE_ACTIVE, "high"},
		{agentEvent(t, 6, readmodel.EventAgentExpired, &registryv1.AgentExpired{Name: name}), registryv1.AgentState_AGENT_STATE_EXPIRED, "high"},
	}
	for i, st := range steps {
		if err := p.Apply(t.Context(), st.e); err != nil {
			t.Fatalf("step %d %s: %v", i, st.e.Type, err)
		}
		a, ok := m.Agent("acme", "a1")
		if !ok || a.State != st.state || a.RiskTier != st.tier {
			t.Fatalf("step %d %s: %+v, want %s tier %s", i, st.e.Type, a, st.state, st.tier)
		}
	}
}
