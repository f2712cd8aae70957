package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// agentsLen is the number of events in the AGENTS stream.
func (h *harness) agentsLen(t *testing.T) uint64 {
	t.Helper()
	return testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
}

// TestRecordRPCs: UpdateAgent, GetAgentHistory, SubmitAgent and ExpireAgent over gRPC with the
// callers' roles and tenants, stale etags, repeated request ids and validate_only; every refusal
// leaves the AGENTS stream as it was.
func TestRecordRPCs(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	h.createTenant(t, "globex")
	ctx := t.Context()
	a := h.register(t, acmeOwner, "rec-1")
	update := func(token, etag, requestID string, validateOnly bool, paths ...string) (*registryv1.UpdateAgentResponse, error) {
		in := proto.CloneOf(a)
		in.Purpose = "Drafts refund decisions and explains them."
		in.Labels = map[string]string{"team": "support"}
		return h.client.UpdateAgent(testkit.WithBearer(ctx, token), &registryv1.UpdateAgentRequest{
			Agent: in, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, Etag: etag, RequestId: requestID, ValidateOnly: validateOnly, Reason: "clarify",
		})
	}

	t.Run("refusals write nothing", func(t *testing.T) {
		before := h.agentsLen(t)
		for _, tc := range []struct {
			name, token, etag string
			paths             []string
			code              codes.Code
			msg               string
		}{
			{"other tenant's admin", globexAdmin, a.GetEtag(), []string{"purpose"}, codes.NotFound, ""},
			{"auditor", acmeAuditor, a.GetEtag(), []string{"purpose"}, codes.PermissionDenied, ""},
			{"another owner", acmeOwner2, a.GetEtag(), []string{"purpose"}, codes.PermissionDenied, ""},
			{"stale etag", acmeOwner, "999", []string{"purpose"}, codes.Aborted, "etag"},
			{"no etag", acmeOwner, "", []string{"purpose"}, codes.InvalidArgument, "etag: is required"},
			{"output-only path", acmeOwner, a.GetEtag(), []string{"risk_tier"}, codes.InvalidArgument, "update_mask: path \"risk_tier\" cannot be updated"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := update(tc.token, tc.etag, "", false, tc.paths...)
				wantCode(t, err, tc.code)
				if tc.msg != "" && !strings.Contains(status.Convert(err).Message(), tc.msg) {
					t.Fatalf("message %q, want %q", status.Convert(err).Message(), tc.msg)
				}
			})
		}
		if _, err := h.client.GetAgentHistory(testkit.WithBearer(ctx, globexAdmin), &registryv1.GetAgentHistoryRequest{Name: a.GetName()}); status.Code(err) != codes.NotFound {
			t.Fatalf("history by another tenant: %v, want NotFound", err)
		}
		if _, err := h.client.SubmitAgent(testkit.WithBearer(ctx, acmeAuditor), &registryv1.SubmitAgentRequest{Name: a.GetName()}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("submit by an auditor: %v", err)
		}
		if _, err := h.client.ExpireAgent(testkit.WithBearer(ctx, acmeAdmin), &registryv1.ExpireAgentRequest{Name: a.GetName()}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("expire by a tenant-admin: %v", err)
		}
		if _, err := h.client.ExpireAgent(testkit.WithBearer(ctx, worker), &registryv1.ExpireAgentRequest{Name: a.GetName()}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("expire without expire_time: %v", err)
		}
		if _, err := h.client.SubmitAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.SubmitAgentRequest{Name: a.GetName()}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("submit of a PENDING agent: %v", err)
		}
		if after := h.agentsLen(t); after != before {
			t.Fatalf("refusals wrote: stream %d → %d", before, after)
		}
	})

	t.Run("validate only writes nothing", func(t *testing.T) {
		before := h.agentsLen(t)
		res, err := update(acmeOwner, a.GetEtag(), "vo", true, "purpose", "labels")
		if err != nil || len(res.GetChangedFields()) != 2 || res.GetAgent().GetLabels()["team"] != "support" {
			t.Fatalf("validate only: %v %v", res, err)
		}
		if after := h.agentsLen(t); after != before {
			t.Fatalf("validate_only wrote: stream %d → %d", before, after)
		}
		reg, err := h.client.RegisterAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: agentInput(t), RequestId: "vo-reg", ValidateOnly: true})
		if err != nil || reg.GetAgent().GetClassification().GetRule() == "" || reg.GetAgent().GetEtag() != "" {
			t.Fatalf("register validate only: %v %v", reg, err)
		}
		if after := h.agentsLen(t); after != before {
			t.Fatalf("register validate_only wrote: stream %d → %d", before, after)
		}
	})

	t.Run("update, repeat, history", func(t *testing.T) {
		res, err := update(acmeOwner, a.GetEtag(), "upd-1", false, "purpose", "labels")
		if err != nil || len(res.GetChangedFields()) != 2 {
			t.Fatalf("update: %v %v", res, err)
		}
		n := h.agentsLen(t)
		again, err := update(acmeOwner, a.GetEtag(), "upd-1", false, "purpose", "labels")
		if err != nil || again.GetAgent().GetEtag() != res.GetAgent().GetEtag() || len(again.GetChangedFields()) != 2 || h.agentsLen(t) != n {
			t.Fatalf("repeat: %v %v, stream %d → %d", again, err, n, h.agentsLen(t))
		}
		hist, err := h.client.GetAgentHistory(testkit.WithBearer(ctx, acmeAuditor), &registryv1.GetAgentHistoryRequest{Name: a.GetName()})
		if err != nil || len(hist.GetEntries()) != 2 {
			t.Fatalf("history: %v %v", hist, err)
		}
		last := hist.GetEntries()[1]
		if last.GetEventType() != "agent.updated" || last.GetActor() != "team:support" || last.GetRequestId() != "upd-1" ||
			last.GetData().GetFields()["reason"].GetStringValue() != "clarify" {
			t.Fatalf("history entry %v", last)
		}
	})

	t.Run("proposed and submitted", func(t *testing.T) {
		res, err := h.client.RegisterAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: agentInput(t), RequestId: "prop-1", Proposed: true})
		if err != nil || res.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_PROPOSED {
			t.Fatalf("proposed: %v %v", res, err)
		}
		sub, err := h.client.SubmitAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.SubmitAgentRequest{Name: res.GetAgent().GetName(), RequestId: "sub-1"})
		if err != nil || sub.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
			t.Fatalf("submit: %v %v", sub, err)
		}
	})
}
