package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestSuspensionCauseOverGRPC: SuspendAgent answers whether the request made the agent's current
// suspension and its cause; ResumeAgent with expected_cause lifts only a suspension of that cause.
func TestSuspensionCauseOverGRPC(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	as := testkit.WithBearer(t.Context(), worker)
	a := h.activate(t, h.register(t, acmeOwner, "sus-cause-1"))

	op, err := h.client.SuspendAgent(testkit.WithBearer(t.Context(), acmeSecurity), &registryv1.SuspendAgentRequest{
		Name: a.GetName(), Reason: "investigation", Cause: "operator", RequestId: "op-1"})
	if err != nil || !op.GetSuspendedByRequest() || op.GetSuspensionCause() != "operator" {
		t.Fatalf("operator's suspension: %v %v", op, err)
	}
	inc, err := h.client.SuspendAgent(as, &registryv1.SuspendAgentRequest{
		Name: a.GetName(), Reason: "alert", Cause: "alert:a1", RequestId: "incident/acme/a1/suspend"})
	if err != nil || inc.GetSuspendedByRequest() || inc.GetSuspensionCause() != "operator" {
		t.Fatalf("incident's suspension of a suspended agent: %v %v", inc, err)
	}

	before := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	_, err = h.client.ResumeAgent(as, &registryv1.ResumeAgentRequest{Name: a.GetName(), Reason: "restored", ExpectedCause: "alert:a1", RequestId: "r1"})
	wantCode(t, err, codes.FailedPrecondition)
	if r := errorReason(err); r != "SUSPENSION_CAUSE_MISMATCH" {
		t.Fatalf("reason %q, want SUSPENSION_CAUSE_MISMATCH (%v)", r, err)
	}
	if after := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("a refused resume wrote %d events", after-before)
	}
	_, err = h.client.ResumeAgent(as, &registryv1.ResumeAgentRequest{Name: a.GetName(), Reason: "r", ExpectedCause: "nonsense", RequestId: "r2"})
	wantCode(t, err, codes.InvalidArgument)
	if f := violatedField(err); f != "expected_cause" {
		t.Fatalf("field %q, want expected_cause (%v)", f, err)
	}
	res, err := h.client.ResumeAgent(as, &registryv1.ResumeAgentRequest{Name: a.GetName(), Reason: "cleared", ExpectedCause: "operator", RequestId: "r3"})
	if err != nil || res.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("resume of the operator's suspension: %v %v", res, err)
	}
}
