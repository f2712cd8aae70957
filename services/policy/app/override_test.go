package app_test

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/policy/app"
)

// overrideBundle is a tenant bundle that allows every agent and raises the faq agents to HIGH.
const overrideBundle = `package agentid.admission

decision := {"outcome": "allow", "reasons": ["allowed"], "required_approvals": []}

risk_tier_override := {"tier": "HIGH", "reason": "the faq bot answers customers"} if input.agent.agentId == "faq"
`

func TestDecisionCarriesAndRecordsTheRiskTierOverride(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admission.rego"), []byte(overrideBundle), 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, app.Config{BundleDir: dir}, true)
	ctx := testkit.WithBearer(t.Context(), "lifecycle")
	req := &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, lowRiskAgent()), RequestId: "provision/acme/faq/policy"}
	resp, err := e.client.EvaluateAdmission(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDecision()
	want := &policyv1.RiskTierOverride{Tier: "RISK_TIER_HIGH", Reason: "the faq bot answers customers"}
	if d.GetOutcome() != policyv1.Outcome_OUTCOME_ALLOW || !proto.Equal(d.GetRiskTierOverride(), want) {
		t.Fatalf("decision = %v, want ALLOW with override %v", d, want)
	}

	// The record on POLICY (the idempotency record) carries it, and a repeat answers it.
	s, err := e.js.Stream(t.Context(), eventstore.StreamPolicy)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), "agentid.acme.policy.>")
	if err != nil {
		t.Fatalf("no decision record on POLICY: %v", err)
	}
	ev, err := eventstore.EventFromRaw(eventstore.StreamPolicy, msg.Sequence, msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](ev)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(rec.GetDecision(), d) {
		t.Errorf("recorded decision %v, answered %v", rec.GetDecision(), d)
	}
	again, err := e.client.EvaluateAdmission(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(again.GetDecision(), d) {
		t.Errorf("repeat answered %v, want the first decision %v", again.GetDecision(), d)
	}

	// Another agent gets no override.
	other := lowRiskAgent()
	other.Name, other.AgentId = "tenants/acme/agents/other", "other"
	resp, err = e.client.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, other)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision().GetRiskTierOverride() != nil {
		t.Errorf("override for another agent: %v", resp.GetDecision().GetRiskTierOverride())
	}
}
