package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// activeAgent registers and activates an agent in tenant.
func (e *env) activeAgent(t *testing.T, tenant, requestID string) *registryv1.Agent {
	t.Helper()
	a := e.register(t, tenant, requestID)
	act, err := e.svc.ActivateAgent(t.Context(), registry.ActivateAgent{Tenant: tenant, AgentID: a.GetAgentId(), DecisionID: "d-" + requestID, ApprovedBy: "policy:auto"}, admin)
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return act
}

// agentEvents returns an agent's stored events.
func (e *env) agentEvents(t *testing.T, tenant, agentID string) []eventstore.Event {
	t.Helper()
	evs, _, err := e.store.Load(t.Context(), tenant, registry.AggregateAgent, agentID)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestSuspendResumeRetire(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	a := e.activeAgent(t, "acme", "s1")
	id := a.GetAgentId()

	sus, err := e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "bulk export at 3 a.m.",
		Cause: "alert:alt_3f9c", Ticket: "INC-42", Etag: a.GetEtag(), RequestID: "sus-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if sus.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED || sus.GetStateReason() != "bulk export at 3 a.m." || sus.GetEtag() == a.GetEtag() {
		t.Fatalf("suspended: %v", sus)
	}
	evs := e.agentEvents(t, "acme", id)
	last := evs[len(evs)-1]
	got, err := eventstore.DecodeAs[*registryv1.AgentSuspended](last)
	if err != nil {
		t.Fatal(err)
	}
	want := &registryv1.AgentSuspended{Name: a.GetName(), Reason: "bulk export at 3 a.m.", Cause: "alert:alt_3f9c", Ticket: "INC-42"}
	if last.Type != registry.EventAgentSuspended || !proto.Equal(got, want) || last.Metadata.Actor != admin.Actor {
		t.Fatalf("stored %s %v by %v, want %s %v", last.Type, got, last.Metadata.Actor, registry.EventAgentSuspended, want)
	}
	if read, err := e.svc.GetAgent(ctx, "acme", id, 0); err != nil || !proto.Equal(read, sus) {
		t.Fatalf("read model: %v %v, want %v", read, err, sus)
	}

	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	// Suspending again, with the same request id or another one, returns the agent and writes nothing.
	for _, rid := range []string{"sus-1", "sus-2", ""} {
		again, err := e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "again", Cause: "operator", RequestID: rid}, admin)
		if err != nil || !proto.Equal(again, sus) {
			t.Fatalf("suspend again (request id %q): %v %v", rid, again, err)
		}
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("a repeated suspension wrote %d events", after-before)
	}

	res, err := e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "false positive", Ticket: "INC-42", Etag: sus.GetEtag(), RequestID: "res-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || res.GetStateReason() != "" {
		t.Fatalf("resumed: %v", res)
	}
	if again, err := e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "false positive", RequestID: "res-1"}, admin); err != nil || !proto.Equal(again, res) {
		t.Fatalf("retried resume: %v %v", again, err)
	}
	_, err = e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "twice", RequestID: "res-2"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_ACTIVE", "")

	sus2, err := e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "second alert", RequestID: "sus-3"}, admin)
	if err != nil || sus2.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("second suspension: %v %v", sus2, err)
	}
	ret, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "confirmed compromise", Ticket: "INC-43",
		Trigger: registry.TriggerAnomaly, Etag: sus2.GetEtag(), RequestID: "ret-1"}, admin)
	if err != nil || ret.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("retire a suspended agent: %v %v", ret, err)
	}
	_, err = e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "late", RequestID: "sus-4"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_RETIRING", "")

	evs = e.agentEvents(t, "acme", id)
	types := make([]string, len(evs))
	for i, ev := range evs {
		types[i] = ev.Type
	}
	wantTypes := []string{registry.EventAgentRegistered, registry.EventAgentActivated, registry.EventAgentSuspended,
		registry.EventAgentResumed, registry.EventAgentSuspended, registry.EventAgentRetirementRequested}
	if fmt.Sprint(types) != fmt.Sprint(wantTypes) {
		t.Fatalf("events %v, want %v", types, wantTypes)
	}
	if c, _ := eventstore.DecodeAs[*registryv1.AgentSuspended](evs[4]); c.GetCause() != registry.CauseOperator {
		t.Fatalf("suspension without a cause recorded %q, want %q", c.GetCause(), registry.CauseOperator)
	}
	r, err := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](evs[5])
	if err != nil || r.GetTrigger() != registry.TriggerAnomaly || r.GetTicket() != "INC-43" {
		t.Fatalf("retirement event %v %v", r, err)
	}

	// A replica replaying the stream folds the same agent.
	agents := registry.NewAgentProjection()
	runner := e.store.NewRunner(agents, eventstore.StreamAgents, nil)
	runAll(t, runner)
	rctx, cancel := context.WithTimeout(ctx, testkit.DefaultWait)
	defer cancel()
	if err := runner.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	live, _ := e.svc.Agents().Get("acme", id)
	rebuilt, _ := agents.Get("acme", id)
	if !proto.Equal(live, rebuilt) || rebuilt.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("rebuilt %v, live %v", rebuilt, live)
	}
}

func TestRetireRecordsRequestTriggerByDefault(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.activeAgent(t, "acme", "t1")
	if _, err := e.svc.RetireAgent(t.Context(), registry.RetireAgent{Tenant: "acme", AgentID: a.GetAgentId(), Reason: "done"}, admin); err != nil {
		t.Fatal(err)
	}
	evs := e.agentEvents(t, "acme", a.GetAgentId())
	r, err := eventstore.DecodeAs[*registryv1.AgentRetirementRequested](evs[len(evs)-1])
	if err != nil || r.GetTrigger() != registry.TriggerRequest {
		t.Fatalf("retirement %v %v, want trigger %q", r, err, registry.TriggerRequest)
	}
}

func TestSuspensionCommandsRefuseBadInputWithoutWriting(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	active := e.activeAgent(t, "acme", "b1")
	pending := e.register(t, "acme", "b2")
	id := active.GetAgentId()

	suspend := func(c registry.SuspendAgent) error {
		if c.AgentID == "" {
			c.AgentID = id
		}
		c.Tenant = "acme"
		_, err := e.svc.SuspendAgent(ctx, c, admin)
		return err
	}
	resume := func(c registry.ResumeAgent) error {
		c.Tenant, c.AgentID = "acme", id
		_, err := e.svc.ResumeAgent(ctx, c, admin)
		return err
	}
	retire := func(c registry.RetireAgent) error {
		c.Tenant, c.AgentID = "acme", id
		_, err := e.svc.RetireAgent(ctx, c, admin)
		return err
	}
	tests := []struct {
		name   string
		call   func() error
		kind   errs.Kind
		reason string
		field  string
	}{
		{"suspend without a reason", func() error { return suspend(registry.SuspendAgent{}) }, errs.KindInvalidArgument, "", "reason"},
		{"suspend with a blank reason", func() error { return suspend(registry.SuspendAgent{Reason: "  "}) }, errs.KindInvalidArgument, "", "reason"},
		{"suspend with a reason over 1024 characters", func() error { return suspend(registry.SuspendAgent{Reason: strings.Repeat("é", 1025)}) }, errs.KindInvalidArgument, "", "reason"},
		{"suspend with a control character in the reason", func() error { return suspend(registry.SuspendAgent{Reason: "a\x00b"}) }, errs.KindInvalidArgument, "", "reason"},
		{"suspend with an unknown cause", func() error { return suspend(registry.SuspendAgent{Reason: "r", Cause: "whim"}) }, errs.KindInvalidArgument, "", "cause"},
		{"suspend with an alert cause without id", func() error { return suspend(registry.SuspendAgent{Reason: "r", Cause: "alert:"}) }, errs.KindInvalidArgument, "", "cause"},
		{"suspend with a review cause with spaces", func() error { return suspend(registry.SuspendAgent{Reason: "r", Cause: "review:q1 2026"}) }, errs.KindInvalidArgument, "", "cause"},
		{"suspend with a cause over 200 characters", func() error {
			return suspend(registry.SuspendAgent{Reason: "r", Cause: "alert:" + strings.Repeat("a", 200)})
		}, errs.KindInvalidArgument, "", "cause"},
		{"suspend with a ticket over 200 characters", func() error { return suspend(registry.SuspendAgent{Reason: "r", Ticket: strings.Repeat("t", 201)}) }, errs.KindInvalidArgument, "", "ticket"},
		{"suspend with a malformed request id", func() error { return suspend(registry.SuspendAgent{Reason: "r", RequestID: "has space"}) }, errs.KindInvalidArgument, "", "request_id"},
		{"suspend with a stale etag", func() error { return suspend(registry.SuspendAgent{Reason: "r", Etag: "1"}) }, errs.KindConflict, "ETAG_MISMATCH", ""},
		{"suspend a pending agent", func() error { return suspend(registry.SuspendAgent{Reason: "r", AgentID: pending.GetAgentId()}) }, errs.KindFailedPrecondition, "AGENT_STATE_PENDING", ""},
		{"suspend an unknown agent", func() error { return suspend(registry.SuspendAgent{Reason: "r", AgentID: registry.NewAgentID()}) }, errs.KindNotFound, "AGENT_NOT_FOUND", ""},
		{"resume without a reason", func() error { return resume(registry.ResumeAgent{}) }, errs.KindInvalidArgument, "", "reason"},
		{"resume with a ticket over 200 characters", func() error { return resume(registry.ResumeAgent{Reason: "r", Ticket: strings.Repeat("t", 201)}) }, errs.KindInvalidArgument, "", "ticket"},
		{"resume an active agent", func() error { return resume(registry.ResumeAgent{Reason: "r"}) }, errs.KindFailedPrecondition, "AGENT_STATE_ACTIVE", ""},
		{"retire for an unknown trigger", func() error { return retire(registry.RetireAgent{Reason: "r", Trigger: "REQUEST"}) }, errs.KindInvalidArgument, "", "trigger"},
	}
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantError(t, tt.call(), tt.kind, tt.reason, tt.field) })
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("refused commands wrote %d events", after-before)
	}
	if got, _ := e.svc.GetAgent(ctx, "acme", id, 0); got.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || got.GetEtag() != active.GetEtag() {
		t.Fatalf("agent changed: %v", got)
	}
}

func TestNormalizeCauseAndTrigger(t *testing.T) {
	causes := []struct {
		in, want string
		ok       bool
	}{
		{"", registry.CauseOperator, true},
		{"operator", "operator", true},
		{"policy", "policy", true},
		{"alert:3f9c0a", "alert:3f9c0a", true},
		{"review:2026-q1/team:payments", "review:2026-q1/team:payments", true},
		{"alert:", "", false},
		{"alert: x", "", false},
		{"Operator", "", false},
		{"incident:1", "", false},
	}
	for _, c := range causes {
		got, err := registry.NormalizeCause(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("NormalizeCause(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
	for _, tr := range registry.Triggers {
		if got, err := registry.NormalizeTrigger(tr); err != nil || got != tr {
			t.Errorf("NormalizeTrigger(%q) = %q, %v", tr, got, err)
		}
	}
	if got, err := registry.NormalizeTrigger(""); err != nil || got != registry.TriggerRequest {
		t.Errorf("NormalizeTrigger(\"\") = %q, %v", got, err)
	}
	if got, err := registry.NormalizeTrigger("task_completed"); err != nil || got != registry.TriggerTaskCompleted {
		t.Errorf("NormalizeTrigger(\"task_completed\") = %q, %v; want it accepted", got, err)
	}
	if _, err := registry.NormalizeTrigger("task_done"); err == nil || !strings.Contains(err.Error(), "task_completed") {
		t.Errorf("NormalizeTrigger(\"task_done\") = %v, want InvalidArgument listing the triggers", err)
	}
}
