package server_test

import (
	"context"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// activate makes a registered agent ACTIVE as the lifecycle worker would.
func (h *harness) activate(t *testing.T, a *registryv1.Agent) *registryv1.Agent {
	t.Helper()
	resp, err := h.client.ActivateAgent(testkit.WithBearer(t.Context(), worker), &registryv1.ActivateAgentRequest{
		Name: a.GetName(), DecisionId: "dec-" + a.GetAgentId(), ApprovedBy: "policy:auto"})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return resp.GetAgent()
}

// TestSuspendResumeAuthorization: only admins, security approvers of the agent's tenant and the
// lifecycle worker suspend and resume; everyone else is refused and nothing is written.
func TestSuspendResumeAuthorization(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	h.createTenant(t, "globex")
	ctx := t.Context()
	a := h.activate(t, h.register(t, acmeOwner, "sus-authz-1"))

	suspend := func(ctx context.Context) error {
		_, err := h.client.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{Name: a.GetName(), Reason: "investigation", Cause: "operator"})
		return err
	}
	resume := func(ctx context.Context) error {
		_, err := h.client.ResumeAgent(ctx, &registryv1.ResumeAgentRequest{Name: a.GetName(), Reason: "cleared"})
		return err
	}
	refused := []struct {
		token string
		want  codes.Code
	}{
		{acmeOwner, codes.PermissionDenied}, // even the agent's own owner: suspension is a security decision
		{acmeOwner2, codes.PermissionDenied},
		{acmeApprover, codes.PermissionDenied},
		{acmeAuditor, codes.PermissionDenied},
		{acmeSub, codes.PermissionDenied},
		{acmeNoRole, codes.PermissionDenied},
		{acmePlatform, codes.PermissionDenied},
		{acmeWorker, codes.PermissionDenied},
		{globexAdmin, codes.NotFound},
		{systemAdmin, codes.NotFound},
		{noToken, codes.Unauthenticated},
		{badToken, codes.Unauthenticated},
	}
	before := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	for _, tt := range refused {
		t.Run("suspend as "+tt.token, func(t *testing.T) { wantCode(t, suspend(testkit.WithBearer(ctx, tt.token)), tt.want) })
	}
	if after := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("refused suspensions wrote %d events", after-before)
	}

	// Each allowed caller suspends and resumes in turn.
	for _, token := range []string{acmeAdmin, acmeSecurity, worker, platformAdmin} {
		t.Run("suspend and resume as "+token, func(t *testing.T) {
			as := testkit.WithBearer(ctx, token)
			sus, err := h.client.SuspendAgent(as, &registryv1.SuspendAgentRequest{Name: a.GetName(), Reason: "investigation", Cause: "alert:alt-1", Ticket: "INC-1"})
			if err != nil || sus.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
				t.Fatalf("suspend: %v %v", sus, err)
			}
			mid := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
			for _, tt := range refused {
				wantCode(t, resume(testkit.WithBearer(ctx, tt.token)), tt.want)
			}
			if after := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents); after != mid {
				t.Fatalf("refused resumptions wrote %d events", after-mid)
			}
			res, err := h.client.ResumeAgent(as, &registryv1.ResumeAgentRequest{Name: a.GetName(), Reason: "cleared", Etag: sus.GetAgent().GetEtag()})
			if err != nil || res.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
				t.Fatalf("resume: %v %v", res, err)
			}
		})
	}
}

// TestSuspendErrorsOverGRPC: bad input names its field, a wrong state names the state, a stale etag
// is Aborted; nothing is written.
func TestSuspendErrorsOverGRPC(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := testkit.WithBearer(t.Context(), acmeAdmin)
	active := h.activate(t, h.register(t, acmeOwner, "sus-err-1"))
	pending := h.register(t, acmeOwner, "sus-err-2")

	before := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	badField := []struct {
		name  string
		req   *registryv1.SuspendAgentRequest
		field string
	}{
		{"no reason", &registryv1.SuspendAgentRequest{Name: active.GetName()}, "reason"},
		{"bad cause", &registryv1.SuspendAgentRequest{Name: active.GetName(), Reason: "r", Cause: "alert:"}, "cause"},
		{"bad name", &registryv1.SuspendAgentRequest{Name: "agents/x", Reason: "r"}, "name"},
	}
	for _, tt := range badField {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.SuspendAgent(ctx, tt.req)
			wantCode(t, err, codes.InvalidArgument)
			if f := violatedField(err); f != tt.field {
				t.Fatalf("field %q, want %q (%v)", f, tt.field, err)
			}
		})
	}
	_, err := h.client.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{Name: pending.GetName(), Reason: "r"})
	wantCode(t, err, codes.FailedPrecondition)
	if r := errorReason(err); r != "AGENT_STATE_PENDING" {
		t.Fatalf("reason %q, want AGENT_STATE_PENDING", r)
	}
	_, err = h.client.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{Name: active.GetName(), Reason: "r", Etag: "1"})
	wantCode(t, err, codes.Aborted)
	_, err = h.client.ResumeAgent(ctx, &registryv1.ResumeAgentRequest{Name: active.GetName(), Reason: "r"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = h.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: active.GetName(), Reason: "r", Trigger: "boredom"})
	wantCode(t, err, codes.InvalidArgument)
	if after := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("refused calls wrote %d events", after-before)
	}
}

// TestWorkerRetiresForAutomatedTriggers: the lifecycle worker retires ACTIVE and SUSPENDED agents
// for a trigger it detected, never on request; an owner still retires its suspended agent.
func TestWorkerRetiresForAutomatedTriggers(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := t.Context()
	ttl := h.activate(t, h.register(t, acmeOwner, "wr-1"))
	anomaly := h.activate(t, h.register(t, acmeOwner, "wr-2"))
	owned := h.activate(t, h.register(t, acmeOwner, "wr-3"))
	as := testkit.WithBearer(ctx, worker)

	ret, err := h.client.RetireAgent(as, &registryv1.RetireAgentRequest{Name: ttl.GetName(), Reason: "expired", Trigger: "ttl"})
	if err != nil || ret.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("worker retires for ttl: %v %v", ret, err)
	}
	for _, a := range []*registryv1.Agent{anomaly, owned} {
		if _, err := h.client.SuspendAgent(as, &registryv1.SuspendAgentRequest{Name: a.GetName(), Reason: "alert", Cause: "alert:x1"}); err != nil {
			t.Fatalf("suspend: %v", err)
		}
	}
	ret, err = h.client.RetireAgent(as, &registryv1.RetireAgentRequest{Name: anomaly.GetName(), Reason: "confirmed", Trigger: "anomaly", Ticket: "INC-9"})
	if err != nil || ret.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("worker retires a suspended agent for an anomaly: %v %v", ret, err)
	}
	ret, err = h.client.RetireAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RetireAgentRequest{Name: owned.GetName(), Reason: "not needed"})
	if err != nil || ret.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("owner retires its suspended agent: %v %v", ret, err)
	}
}

// violatedField is the field of an InvalidArgument status's BadRequest detail.
func violatedField(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// errorReason is the reason of a status's ErrorInfo detail.
func errorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
