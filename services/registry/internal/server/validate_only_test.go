package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestAuditorMayOnlyValidate: an auditor (the read-only credential of a pipeline's plan step) may ask
// RegisterAgent and UpdateAgent with validate_only, answered as an admin would be, and nothing is
// written; without validate_only both are PermissionDenied.
func TestAuditorMayOnlyValidate(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := testkit.WithBearer(t.Context(), acmeAuditor)
	a := h.register(t, acmeOwner, "audited")
	before := h.agentsLen(t)

	in := agentInput(t)
	in.Owner = "team:elsewhere" // not the auditor's: previewed as an admin's registration
	reg, err := h.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: in, RequestId: "plan-1", ValidateOnly: true})
	if err != nil || reg.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("validate_only registration by an auditor: %v %v", reg.GetAgent().GetState(), err)
	}
	_, err = h.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: in, RequestId: "plan-1"})
	wantCode(t, err, codes.PermissionDenied)

	upd := proto.CloneOf(a)
	upd.Purpose = "Previewed by the plan step."
	req := &registryv1.UpdateAgentRequest{Agent: upd, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"purpose"}}, Etag: a.GetEtag(), RequestId: "plan-u1", ValidateOnly: true}
	got, err := h.client.UpdateAgent(ctx, req)
	if err != nil || got.GetAgent().GetPurpose() != upd.GetPurpose() {
		t.Fatalf("validate_only update by an auditor: %v %v", got.GetAgent().GetPurpose(), err)
	}
	req.ValidateOnly = false
	_, err = h.client.UpdateAgent(ctx, req)
	wantCode(t, err, codes.PermissionDenied)

	if after := h.agentsLen(t); after != before {
		t.Fatalf("an auditor's calls wrote: AGENTS %d → %d", before, after)
	}
}
