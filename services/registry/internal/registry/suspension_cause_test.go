package registry_test

import (
	"errors"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// An incident resumes only the suspension it made: Suspend says whether the request made the current
// suspension and its cause, and ResumeAgent with ExpectedCause refuses, writing nothing, to lift a
// suspension of another cause.
func TestSuspensionCauseAndExpectedCause(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	id := e.activeAgent(t, "acme", "sc1").GetAgentId()

	suspend := func(cause, rid string) registry.Suspension {
		t.Helper()
		res, err := e.svc.Suspend(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "r", Cause: cause, RequestID: rid}, admin)
		if err != nil {
			t.Fatalf("suspend (%s, %s): %v", cause, rid, err)
		}
		if res.Agent.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
			t.Fatalf("suspend (%s, %s): %v", cause, rid, res.Agent)
		}
		return res
	}

	// An operator suspends first: an alert's incident then finds it suspended by someone else.
	if got := suspend("operator", "op-1"); !got.ByRequest || got.Cause != registry.CauseOperator {
		t.Fatalf("operator's suspension = by request %v, cause %q; want true, operator", got.ByRequest, got.Cause)
	}
	if got := suspend("alert:a1", "incident/acme/a1/suspend"); got.ByRequest || got.Cause != registry.CauseOperator {
		t.Fatalf("incident's suspension of a suspended agent = by request %v, cause %q; want false, operator", got.ByRequest, got.Cause)
	}
	// The operator's retried request still made it.
	if got := suspend("operator", "op-1"); !got.ByRequest || got.Cause != registry.CauseOperator {
		t.Fatalf("retried operator's suspension = by request %v, cause %q; want true, operator", got.ByRequest, got.Cause)
	}

	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	_, err := e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "restored", ExpectedCause: "alert:a1", RequestID: "incident/acme/a1/restore"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "SUSPENSION_CAUSE_MISMATCH", "")
	if fe := (*errs.Error)(nil); !errors.As(err, &fe) || fe.Metadata["cause"] != registry.CauseOperator {
		t.Fatalf("mismatch error %v does not name the current cause operator", err)
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("a refused resume wrote %d events", after-before)
	}
	if a, err := e.svc.GetAgent(ctx, "acme", id, 0); err != nil || a.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("after the refused resume: %v %v, want SUSPENDED", a, err)
	}

	// Without an expected cause the operator resumes; the agent is then suspended by the alert's incident.
	if _, err := e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "cleared", ExpectedCause: "operator", RequestID: "op-res"}, admin); err != nil {
		t.Fatal(err)
	}
	if got := suspend("alert:a2", "incident/acme/a2/suspend"); !got.ByRequest || got.Cause != "alert:a2" {
		t.Fatalf("incident's suspension of an active agent = by request %v, cause %q; want true, alert:a2", got.ByRequest, got.Cause)
	}
	// The earlier operator request no longer made the current suspension.
	if got := suspend("operator", "op-1"); got.ByRequest || got.Cause != "alert:a2" {
		t.Fatalf("stale operator request = by request %v, cause %q; want false, alert:a2", got.ByRequest, got.Cause)
	}
	// Another alert's incident may not lift it; this alert's may, and a retry of it is answered as before.
	_, err = e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "restored", ExpectedCause: "alert:a1", RequestID: "incident/acme/a1/restore-2"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "SUSPENSION_CAUSE_MISMATCH", "")
	for range 2 {
		res, err := e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "restored", ExpectedCause: "alert:a2", RequestID: "incident/acme/a2/restore"}, admin)
		if err != nil || res.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
			t.Fatalf("resume of its own suspension: %v %v", res, err)
		}
	}
	// An ACTIVE agent: wrong state, whatever the expected cause.
	_, err = e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "again", ExpectedCause: "alert:a2", RequestID: "x"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_ACTIVE", "")
	// A malformed expected cause is refused naming the field.
	_, err = e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "r", ExpectedCause: "alert:", RequestID: "y"}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "expected_cause")
}
