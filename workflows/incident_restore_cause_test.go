package workflows_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestIncidentRestoreLiftsOnlyItsOwnSuspension: an incident's restore resumes the agent only when the
// agent's current suspension is the incident's own (cause alert:<alert id>); a suspension made by an
// operator, another incident, or made again by someone else while the incident waited stays in place,
// the incident is resolved (restored) and its timeline says the agent was not resumed.
func TestIncidentRestoreLiftsOnlyItsOwnSuspension(t *testing.T) {
	own := "alert:" + alertID
	tests := []struct {
		name string
		// before runs before the incident starts; during 30 minutes into it.
		before, during func(r *workflowstest.Registry, agent string)
		wantState      registryv1.AgentState
		wantCause      string // the suspension's cause after the restore ("" when ACTIVE)
		wantNote       string // in the timeline when the incident did not suspend
		wantLast       string // the last action taken
	}{
		{
			name: "its own suspension is lifted", wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
			wantLast: "restored by " + agentOwner,
		},
		{
			name: "an operator's suspension stays",
			before: func(r *workflowstest.Registry, agent string) {
				suspendAs(t, r, agent, "operator", "op-1")
			},
			wantState: registryv1.AgentState_AGENT_STATE_SUSPENDED, wantCause: "operator",
			wantNote: "suspended already, not by this incident (cause operator)",
			wantLast: "restore decided by " + agentOwner + "; not resumed: the agent's suspension was not made by this incident (cause operator): it stays SUSPENDED",
		},
		{
			name: "another incident's suspension stays",
			before: func(r *workflowstest.Registry, agent string) {
				suspendAs(t, r, agent, "alert:critical-1", "incident/acme/critical-1/suspend")
			},
			wantState: registryv1.AgentState_AGENT_STATE_SUSPENDED, wantCause: "alert:critical-1",
			wantNote: "suspended already, not by this incident (cause alert:critical-1)",
			wantLast: "restore decided by " + agentOwner + "; not resumed: the agent's suspension was not made by this incident (cause alert:critical-1): it stays SUSPENDED",
		},
		{
			name: "a review's suspension made while the incident waited stays",
			during: func(r *workflowstest.Registry, agent string) {
				if _, err := r.ResumeAgent(context.Background(), &registryv1.ResumeAgentRequest{Name: agent, Reason: "operator", RequestId: "op-res"}); err != nil {
					t.Errorf("operator's resume: %v", err)
				}
				suspendAs(t, r, agent, "review:q4", "review-1")
			},
			wantState: registryv1.AgentState_AGENT_STATE_SUSPENDED, wantCause: "review:q4",
			wantLast: "restore decided by " + agentOwner + "; not resumed: the agent's suspension was not made by this incident (cause review:q4): it stays SUSPENDED",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agentID := "inccause" + string(rune('a'+i))
			agent := workflows.AgentName(tenant, agentID)
			f, _ := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_HIGH)
			if tt.before != nil {
				tt.before(f.fakes.Registry, agent)
			}
			if tt.during != nil {
				f.env.RegisterDelayedCallback(func() { tt.during(f.fakes.Registry, agent) }, 30*time.Minute)
			}
			out := f.decide(time.Hour, "d0", decisionToken(t, agentID, agentOwner, "owner", "restore"))
			f.env.ExecuteWorkflow(workflows.IncidentWorkflow, incidentInput(agentID, "critical", "high"))
			res := incidentResult(t, f)
			if res.Result != workflows.OutcomeRestored || res.DecidedBy != agentOwner || out.completed != nil || out.rejected != nil {
				t.Fatalf("result = %+v (update: %v / %v), want restored by %s", res, out.rejected, out.completed, agentOwner)
			}
			if st := f.fakes.Registry.Agent(agent).GetState(); st != tt.wantState {
				t.Fatalf("agent is %s, want %s", st, tt.wantState)
			}
			if got := f.fakes.Registry.SuspensionCause(agent); got != tt.wantCause {
				t.Fatalf("suspension cause = %q, want %q", got, tt.wantCause)
			}
			resumes := workflowstest.RequestsOf[*registryv1.ResumeAgentRequest](f.fakes, "ResumeAgent")
			if i := slices.IndexFunc(resumes, func(r *registryv1.ResumeAgentRequest) bool { return r.GetRequestId() != "op-res" }); i < 0 || resumes[i].GetExpectedCause() != own {
				t.Fatalf("resume requests = %v, want one with expected cause %s", resumes, own)
			}
			if last := res.Taken[len(res.Taken)-1]; last != tt.wantLast {
				t.Fatalf("last action = %q, want %q", last, tt.wantLast)
			}
			timeline := strings.Join(res.Timeline, "\n")
			if tt.wantNote != "" && !strings.Contains(timeline, tt.wantNote) {
				t.Fatalf("timeline %q does not say %q", timeline, tt.wantNote)
			}
			if tt.wantNote == "" && strings.Contains(timeline, "not by this incident") {
				t.Fatalf("timeline %q says the incident did not suspend", timeline)
			}
			_, resolved := incidentEvents(t, f, agentID)
			if resolved == nil || resolved.GetOutcome() != workflows.OutcomeRestored || !slices.Contains(resolved.GetTimeline(), res.Timeline[len(res.Timeline)-1]) {
				t.Fatalf("incident_resolved = %v, want restored with the timeline", resolved)
			}
		})
	}
}

// suspendAs suspends agent in the fake registry with cause and request id.
func suspendAs(t *testing.T, r *workflowstest.Registry, agent, cause, requestID string) {
	t.Helper()
	if _, err := r.SuspendAgent(context.Background(), &registryv1.SuspendAgentRequest{Name: agent, Reason: "r", Cause: cause, RequestId: requestID}); err != nil {
		t.Errorf("suspend %s (%s): %v", agent, cause, err)
	}
}
