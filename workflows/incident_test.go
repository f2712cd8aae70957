package workflows_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const alertID = "0190d1c0-0000-7000-8000-0000000000aa"

// notifications records what the incident runs sent.
type notifications struct {
	mu   sync.Mutex
	sent []workflows.Notification
	fail error
}

func (n *notifications) Notify(_ context.Context, m workflows.Notification) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return n.fail
	}
	n.sent = append(n.sent, m)
	return nil
}

func (n *notifications) recipients() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.sent {
		out = append(out, m.Kind+":"+m.RecipientRole)
	}
	return out
}

// incidentFixture is a workflow test of one incident about an ACTIVE agent of risk tier.
func incidentFixture(t *testing.T, agentID string, tier registryv1.RiskTier) (*fixture, *notifications) {
	t.Helper()
	f := newFixture(t, workflows.IncidentWorkflowID(tenant, alertID))
	a := workflowstest.NewAgent(tenant, agentID, tier)
	a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	f.fakes.Registry.Put(a)
	n := &notifications{}
	f.acts.Notifier = n
	return f, n
}

func incidentInput(agentID, severity, tier string) workflows.IncidentInput {
	return workflows.IncidentInput{
		Tenant: tenant, AlertID: alertID, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID, AgentKnown: true,
		Detector: "bulk_export", Severity: severity, RiskTier: tier, Summary: "412,000 rows in one request",
		Owner: agentOwner, Sponsor: agentSponsor, EventID: "ev-1",
	}
}

// decide sends update "decide" at the given time and keeps its outcome.
type decideOutcome struct {
	rejected  error
	completed error
	status    workflows.IncidentStatus
}

func (f *fixture) decide(at time.Duration, id string, d workflows.IncidentDecision) *decideOutcome {
	out := &decideOutcome{}
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.DecideUpdate, id, &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { out.rejected = err },
			OnComplete: func(v any, err error) {
				out.completed = err
				if err == nil {
					out.status = v.(workflows.IncidentStatus)
				}
			},
		}, d)
	}, at)
	return out
}

func decisionToken(t *testing.T, agentID, sub, step, decision string, roles ...string) workflows.IncidentDecision {
	t.Helper()
	return workflows.IncidentDecision{Token: tokenApproval(t, agentID, sub, step, decision, "", roles...).Token, Comment: "checked the export"}
}

func (f *fixture) incidentStatus(t *testing.T) workflows.IncidentStatus {
	t.Helper()
	v, err := f.env.QueryWorkflow(workflows.StatusQuery)
	if err != nil {
		t.Fatalf("query status: %v", err)
	}
	var s workflows.IncidentStatus
	if err := v.Get(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func incidentResult(t *testing.T, f *fixture) workflows.IncidentResult {
	t.Helper()
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("the incident run did not complete")
	}
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("incident run failed: %v", err)
	}
	var res workflows.IncidentResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

// incidentEvents are the lifecycle events of the agent's incidents, by type.
func incidentEvents(t *testing.T, f *fixture, agg string) (opened *lifecyclev1.IncidentOpened, resolved *lifecyclev1.IncidentResolved) {
	t.Helper()
	for _, ev := range f.events(t, agg) {
		switch ev.Type {
		case workflows.EventIncidentOpened:
			m, err := eventstore.DecodeAs[*lifecyclev1.IncidentOpened](ev)
			if err != nil {
				t.Fatal(err)
			}
			opened = m
		case workflows.EventIncidentResolved:
			m, err := eventstore.DecodeAs[*lifecyclev1.IncidentResolved](ev)
			if err != nil {
				t.Fatal(err)
			}
			resolved = m
		}
	}
	return opened, resolved
}

func TestIncidentPaths(t *testing.T) {
	tests := []struct {
		name     string
		severity string
		tier     registryv1.RiskTier
		// decisions sent, each at its time
		decisions func(t *testing.T, agentID string) []timedDecision
		// expectations
		wantOutcome   string
		wantDecider   string
		wantState     registryv1.AgentState
		wantSuspended bool
		wantNotified  []string
		wantTaken     []string
		wantRetire    bool
	}{
		{
			name: "critical: suspended, owner restores", severity: "critical", tier: registryv1.RiskTier_RISK_TIER_LOW,
			decisions: func(t *testing.T, id string) []timedDecision {
				return []timedDecision{{time.Hour, decisionToken(t, id, agentOwner, "owner", "restore")}}
			},
			wantOutcome: workflows.OutcomeRestored, wantDecider: agentOwner, wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
			wantSuspended: true, wantNotified: []string{"incident.opened:owner"},
			wantTaken: []string{"suspended", "tokens revoked", "notified owner", "restored by " + agentOwner},
		},
		{
			name: "critical: owner retires", severity: "critical", tier: registryv1.RiskTier_RISK_TIER_MODERATE,
			decisions: func(t *testing.T, id string) []timedDecision {
				return []timedDecision{{time.Hour, decisionToken(t, id, agentOwner, "owner", "retire")}}
			},
			wantOutcome: workflows.OutcomeRetired, wantDecider: agentOwner, wantState: registryv1.AgentState_AGENT_STATE_RETIRING,
			wantSuspended: true, wantNotified: []string{"incident.opened:owner"}, wantRetire: true,
			wantTaken: []string{"suspended", "tokens revoked", "notified owner", "retired by " + agentOwner},
		},
		{
			name: "high on a high-risk agent: nobody answers, security restores after escalation", severity: "high", tier: registryv1.RiskTier_RISK_TIER_HIGH,
			decisions: func(t *testing.T, id string) []timedDecision {
				return []timedDecision{{9 * time.Hour, decisionToken(t, id, "sec@corp.example", "security", "restore", "security-approver")}}
			},
			wantOutcome: workflows.OutcomeRestored, wantDecider: "sec@corp.example", wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
			wantSuspended: true,
			wantNotified:  []string{"incident.opened:owner", "incident.escalated:sponsor", "incident.escalated:security"},
			wantTaken: []string{"suspended", "tokens revoked", "notified owner", "escalated to sponsor", "notified sponsor",
				"escalated to security", "notified security", "restored by sec@corp.example"},
		},
		{
			name: "high on a low-risk agent: notify only", severity: "high", tier: registryv1.RiskTier_RISK_TIER_LOW,
			wantOutcome: workflows.OutcomeNotified, wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
			wantNotified: []string{"incident.opened:owner"}, wantTaken: []string{"notified owner"},
		},
		{
			name: "medium: notify only", severity: "medium", tier: registryv1.RiskTier_RISK_TIER_HIGH,
			wantOutcome: workflows.OutcomeNotified, wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
			wantNotified: []string{"incident.opened:owner"}, wantTaken: []string{"notified owner"},
		},
		{
			name: "low: recorded only", severity: "low", tier: registryv1.RiskTier_RISK_TIER_HIGH,
			wantOutcome: workflows.OutcomeNotified, wantState: registryv1.AgentState_AGENT_STATE_ACTIVE,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agentID := "inc" + string(rune('a'+i))
			f, n := incidentFixture(t, agentID, tt.tier)
			var outs []*decideOutcome
			if tt.decisions != nil {
				for j, d := range tt.decisions(t, agentID) {
					outs = append(outs, f.decide(d.at, "d"+string(rune('0'+j)), d.d))
				}
			}
			var during workflows.IncidentStatus
			f.env.RegisterDelayedCallback(func() { during = f.incidentStatus(t) }, 30*time.Minute)
			f.env.ExecuteWorkflow(workflows.IncidentWorkflow, incidentInput(agentID, tt.severity, workflows.RiskTierName(tt.tier)))
			res := incidentResult(t, f)
			if res.Result != tt.wantOutcome || res.DecidedBy != tt.wantDecider {
				t.Fatalf("result = %+v, want %s by %q", res, tt.wantOutcome, tt.wantDecider)
			}
			for _, o := range outs {
				if o.rejected != nil || o.completed != nil {
					t.Fatalf("decision refused: %v / %v", o.rejected, o.completed)
				}
				if o.status.Outcome != tt.wantOutcome || o.status.Decision == nil || o.status.Decision.Decider != tt.wantDecider {
					t.Fatalf("update answered %+v, want the outcome %s decided by %s", o.status, tt.wantOutcome, tt.wantDecider)
				}
			}
			agent := workflows.AgentName(tenant, agentID)
			if st := f.fakes.Registry.Agent(agent).GetState(); st != tt.wantState {
				t.Fatalf("agent is %s, want %s", st, tt.wantState)
			}
			suspends := workflowstest.RequestsOf[*registryv1.SuspendAgentRequest](f.fakes, "SuspendAgent")
			revokes := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
			if tt.wantSuspended {
				if len(suspends) == 0 || suspends[0].GetCause() != "alert:"+alertID || suspends[0].GetRequestId() != workflows.IncidentWorkflowID(tenant, alertID)+"/suspend" {
					t.Fatalf("suspend requests = %v, want one with cause alert:%s and the run's request id", suspends, alertID)
				}
				if len(revokes) == 0 || revokes[0].GetAgent() != agent {
					t.Fatalf("revocations = %v, want every token of %s", revokes, agent)
				}
				if during.Stage != workflows.StageIncidentDecide || during.Decider != workflows.StepOwner {
					t.Fatalf("status after 30m = %+v, want waiting for the owner's decision", during)
				}
			} else if len(suspends) > 0 || len(revokes) > 0 {
				t.Fatalf("a %s alert on a %s agent suspended (%v) or revoked (%v)", tt.severity, tt.tier, suspends, revokes)
			}
			retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
			if tt.wantRetire != (len(retires) > 0) || (tt.wantRetire && retires[0].GetTrigger() != workflows.RetireTriggerAnomaly) {
				t.Fatalf("retire requests = %v, want retire=%v with trigger anomaly", retires, tt.wantRetire)
			}
			if got := n.recipients(); !slices.Equal(got, tt.wantNotified) {
				t.Fatalf("notifications = %v, want %v", got, tt.wantNotified)
			}
			final := f.incidentStatus(t)
			if final.Stage != workflows.StageDone || !slices.Equal(final.Taken, tt.wantTaken) {
				t.Fatalf("final status = stage %s, taken %q; want done, %q", final.Stage, final.Taken, tt.wantTaken)
			}
			opened, resolved := incidentEvents(t, f, agentID)
			if opened == nil || opened.GetAlertId() != alertID || opened.GetSeverity() != tt.severity {
				t.Fatalf("incident_opened = %v", opened)
			}
			if resolved == nil || resolved.GetOutcome() != tt.wantOutcome || resolved.GetDecidedBy() != tt.wantDecider || len(resolved.GetTimeline()) < len(tt.wantTaken) {
				t.Fatalf("incident_resolved = %v, want outcome %s by %q with the timeline", resolved, tt.wantOutcome, tt.wantDecider)
			}
		})
	}
}

type timedDecision struct {
	at time.Duration
	d  workflows.IncidentDecision
}

// TestIncidentRefusesDecisions: a decision without a valid token for this run, its current step and a
// restore/retire decision is refused, recorded in the status, and changes nothing; the valid decision
// after them counts.
func TestIncidentRefusesDecisions(t *testing.T) {
	const agentID = "increfused"
	f, _ := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_HIGH)
	otherRun := decisionToken(t, agentID, agentOwner, "owner", "restore")
	otherRun.Token = approvalIssuer(t).Token(t, claimsOf(t, agentID, agentOwner, "owner", "restore", "another-run"))
	refused := []struct {
		name string
		d    workflows.IncidentDecision
		want string
	}{
		{"no token", workflows.IncidentDecision{Decision: "restore"}, "no approval token"},
		{"garbage token", workflows.IncidentDecision{Token: "not-a-jws"}, "approval refused"},
		{"provisioning decision", decisionToken(t, agentID, agentOwner, "owner", "approve"), "is for \"approve\""},
		{"wrong step", decisionToken(t, agentID, agentOwner, "security", "restore"), "waits for a decision by owner"},
		{"another run", otherRun, "not this incident run"},
		{"not the owner", decisionToken(t, agentID, "mallory@corp.example", "owner", "restore", "owner"), "decided by"},
		{"restore by an approver", decisionToken(t, agentID, "ann@corp.example", "owner", "restore", "approver"), "decided by"},
		{"request says retire", func() workflows.IncidentDecision {
			d := decisionToken(t, agentID, agentOwner, "owner", "restore")
			d.Decision = "retire"
			return d
		}(), "the request says retire"},
		{"relayed by someone else", func() workflows.IncidentDecision {
			d := decisionToken(t, agentID, agentOwner, "owner", "restore")
			d.SubmittedBy = "mallory@corp.example"
			return d
		}(), "not to the caller"},
	}
	var outs []*decideOutcome
	for i, r := range refused {
		outs = append(outs, f.decide(time.Duration(i+1)*time.Minute, "r"+string(rune('a'+i)), r.d))
	}
	var afterRefusals workflows.IncidentStatus
	f.env.RegisterDelayedCallback(func() { afterRefusals = f.incidentStatus(t) }, 30*time.Minute)
	good := decisionToken(t, agentID, agentSponsor, "owner", "retire")
	ok := f.decide(time.Hour, "good", good)
	// The same token again, while the run takes the first: refused.
	again := f.decide(time.Hour, "again", good)
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, incidentInput(agentID, "critical", "high"))

	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeRetired || res.DecidedBy != agentSponsor {
		t.Fatalf("result = %+v, want retired by the sponsor as the owner's delegate", res)
	}
	for i, r := range refused {
		err := outs[i].rejected
		if err == nil {
			err = outs[i].completed
		}
		if err == nil || !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: err = %v, want refused saying %q", r.name, err, r.want)
		}
	}
	if afterRefusals.Stage != workflows.StageIncidentDecide || afterRefusals.Decision != nil {
		t.Fatalf("after refusals: %+v, want still waiting, nothing decided", afterRefusals)
	}
	// Refusals the validator answers (no token) never reach the run; every other one is recorded.
	if afterRefusals.RefusedCount != len(refused)-1 {
		t.Fatalf("refused_count = %d, want %d: %+v", afterRefusals.RefusedCount, len(refused)-1, afterRefusals.Refused)
	}
	if ok.completed != nil || ok.rejected != nil || ok.status.Decision.Role != "owner-delegate" {
		t.Fatalf("valid decision: %v %v %+v", ok.rejected, ok.completed, ok.status.Decision)
	}
	if again.rejected == nil && again.completed == nil {
		t.Fatal("a decision after the run decided was taken")
	}
	if n := len(workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")); n != 1 {
		t.Fatalf("%d retire requests, want 1", n)
	}
	if n := len(workflowstest.RequestsOf[*registryv1.ResumeAgentRequest](f.fakes, "ResumeAgent")); n != 0 {
		t.Fatalf("%d resume requests, want none", n)
	}
}

// TestIncidentUnknownAgent: an alert about an agent the registry does not know opens an incident that
// suspends nothing and notifies security.
func TestIncidentUnknownAgent(t *testing.T) {
	f := newFixture(t, workflows.IncidentWorkflowID(tenant, alertID))
	n := &notifications{}
	f.acts.Notifier = n
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, workflows.IncidentInput{
		Tenant: tenant, AlertID: alertID, Agent: "ghost-client-7", Detector: "unknown_agent", Severity: "critical",
	})
	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeNotified {
		t.Fatalf("result = %+v, want notified", res)
	}
	if got := n.recipients(); !slices.Equal(got, []string{"incident.opened:security"}) {
		t.Fatalf("notifications = %v, want security only", got)
	}
	if len(f.fakes.Requests("SuspendAgent")) > 0 || len(f.fakes.Requests("RevokeTokens")) > 0 {
		t.Fatal("an unknown agent was suspended or revoked")
	}
	opened, resolved := incidentEvents(t, f, "alert-"+alertID)
	if opened == nil || resolved == nil || resolved.GetOutcome() != workflows.OutcomeNotified || opened.GetAgent() != "ghost-client-7" {
		t.Fatalf("events = %v / %v, want opened and resolved (notified) under the alert", opened, resolved)
	}
}

// TestIncidentFailsClosed: when policy cannot be evaluated a critical alert still suspends; a
// notification that cannot be delivered is recorded and does not stop the run.
func TestIncidentFailsClosed(t *testing.T) {
	const agentID = "incclosed"
	f, n := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_LOW)
	n.fail = errors.New("webhook down")
	f.env.OnActivity(f.acts.DecideIncidentActions, mock.Anything, mock.Anything).Return(workflows.IncidentActions{}, errors.New("policy unavailable"))
	f.decide(2*time.Hour, "d", decisionToken(t, agentID, agentOwner, "owner", "restore"))
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, incidentInput(agentID, "critical", "low"))
	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeRestored {
		t.Fatalf("result = %+v, want restored", res)
	}
	if len(f.fakes.Requests("SuspendAgent")) != 1 {
		t.Fatal("a critical alert did not suspend while policy was unavailable")
	}
	joined := strings.Join(res.Timeline, "\n")
	for _, want := range []string{"policy could not be evaluated", "notification to owner failed"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("timeline %q does not record %q", joined, want)
		}
	}
}

func TestIncidentPolicyTable(t *testing.T) {
	p := &workflows.IncidentPolicy{Tenants: map[string]map[string][]string{"strict": {"medium": {"suspend", "notify"}}}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tenant, severity, tier string
		want                   []string
	}{
		{"acme", "low", "high", []string{"record"}},
		{"acme", "medium", "high", []string{"notify"}},
		{"acme", "high", "low", []string{"notify"}},
		{"acme", "high", "moderate", []string{"notify"}},
		{"acme", "high", "high", []string{"suspend", "notify"}},
		{"acme", "high", "critical", []string{"suspend", "notify"}},
		{"acme", "high", "unclassified", []string{"suspend", "notify"}},
		{"acme", "critical", "low", []string{"suspend", "notify"}},
		{"acme", "bogus", "low", []string{"suspend", "notify"}},
		{"strict", "medium", "low", []string{"suspend", "notify"}},
		{"strict", "low", "low", []string{"record"}},
	}
	for _, tt := range tests {
		if got := p.Actions(tt.tenant, tt.severity, tt.tier); !slices.Equal(got, tt.want) {
			t.Errorf("Actions(%s, %s, %s) = %v, want %v", tt.tenant, tt.severity, tt.tier, got, tt.want)
		}
	}
	for _, bad := range []map[string][]string{
		{"critical": {"notify"}}, {"severe": {"notify"}}, {"low": {"page"}}, {"low": {}},
	} {
		if err := (&workflows.IncidentPolicy{Tenants: map[string]map[string][]string{"t": bad}}).Validate(); err == nil {
			t.Errorf("Validate(%v) = nil, want an error", bad)
		}
	}
}

// TestIncidentRevocationRefused: when the issuer refuses the explicit revocation for good (e.g. the
// worker may not revoke), the suspended agent stays decidable: the run records it and waits for the
// decision, which restores the agent.
func TestIncidentRevocationRefused(t *testing.T) {
	const agentID = "increvoke"
	f, _ := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_LOW)
	f.env.OnActivity(f.acts.IncidentRevokeTokens, mock.Anything, mock.Anything).
		Return(temporal.NewNonRetryableApplicationError("issuer.RevokeTokens: NOT_FOUND: tenant not found", "TENANT_NOT_FOUND", nil))
	var waiting workflows.IncidentStatus
	f.env.RegisterDelayedCallback(func() { waiting = f.incidentStatus(t) }, 30*time.Minute)
	f.decide(time.Hour, "d", decisionToken(t, agentID, agentOwner, "owner", "restore"))
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, incidentInput(agentID, "critical", "low"))
	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeRestored {
		t.Fatalf("result = %+v, want restored", res)
	}
	if waiting.Stage != workflows.StageIncidentDecide || slices.Contains(waiting.Taken, "tokens revoked") {
		t.Fatalf("status while waiting = %+v, want waiting for a decision without claiming the tokens were revoked", waiting)
	}
	if !strings.Contains(strings.Join(res.Timeline, "\n"), "tokens not revoked explicitly (issuer.RevokeTokens: NOT_FOUND") {
		t.Fatalf("timeline %q does not record the refused revocation", res.Timeline)
	}
	if st := f.fakes.Registry.Agent(workflows.AgentName(tenant, agentID)).GetState(); st != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent is %s, want ACTIVE after restore", st)
	}
}

// activityLog records the activities a workflow test runs, in order, local ones as "local:<name>"
// (consecutive attempts of one activity once).
type activityLog struct {
	mu    sync.Mutex
	names []string
}

func (l *activityLog) add(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.names) == 0 || l.names[len(l.names)-1] != name {
		l.names = append(l.names, name)
	}
}

func (l *activityLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names)
}

// logActivities records every activity f's run starts.
func (f *fixture) logActivities() *activityLog {
	l := &activityLog{}
	f.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		l.add(info.ActivityType.Name)
	})
	f.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		l.add("local:" + info.ActivityType.Name)
	})
	return l
}

// TestIncidentSuspendsFirst: the run takes the actions the consumer passed and, when they suspend,
// its first steps are the suspension and the revocation as local activities, before incident_opened
// is recorded and the owner notified. Without actions it asks policy (locally) first; actions it does
// not know fail closed.
func TestIncidentSuspendsFirst(t *testing.T) {
	opened := []string{"RecordIncidentOpened", "IncidentNotify"}
	suspend := []string{"local:IncidentSuspendAgent", "local:IncidentRevokeTokens"}
	tests := []struct {
		name         string
		severity     string
		actions      []string
		wantFirst    []string // the run's first activities, in order
		wantSuspend  bool
		wantTimeline string
	}{
		{name: "critical, actions passed: suspension first", severity: "critical", actions: []string{"suspend", "notify"},
			wantFirst: slices.Concat(suspend, opened), wantSuspend: true},
		{name: "actions passed are taken as given", severity: "critical", actions: []string{"notify"},
			wantFirst: opened},
		{name: "medium, actions passed: notify only", severity: "medium", actions: []string{"notify"},
			wantFirst: opened},
		{name: "no actions passed: policy asked locally, then the suspension", severity: "critical",
			wantFirst: slices.Concat([]string{"local:DecideIncidentActions"}, suspend, opened), wantSuspend: true},
		{name: "unknown action: fails closed", severity: "critical", actions: []string{"page"},
			wantFirst: slices.Concat(suspend, opened), wantSuspend: true, wantTimeline: `policy could not be evaluated (unknown actions ["page"])`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agentID := "incfirst" + string(rune('a'+i))
			f, _ := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_LOW)
			acts := f.logActivities()
			if tt.wantSuspend {
				f.decide(time.Hour, "d", decisionToken(t, agentID, agentOwner, "owner", "restore"))
			}
			in := incidentInput(agentID, tt.severity, "low")
			in.Actions = tt.actions
			f.env.ExecuteWorkflow(workflows.IncidentWorkflow, in)
			res := incidentResult(t, f)
			got := acts.all()
			if len(got) < len(tt.wantFirst) || !slices.Equal(got[:len(tt.wantFirst)], tt.wantFirst) {
				t.Fatalf("activities = %v, want them to start with %v", got, tt.wantFirst)
			}
			if tt.actions != nil && slices.ContainsFunc(got, func(n string) bool { return strings.HasSuffix(n, "DecideIncidentActions") }) {
				t.Fatalf("activities = %v: policy asked although the consumer decided", got)
			}
			if n := len(f.fakes.Requests("SuspendAgent")); (n > 0) != tt.wantSuspend {
				t.Fatalf("%d suspend requests, want suspended=%v", n, tt.wantSuspend)
			}
			if tt.wantTimeline != "" && !strings.Contains(strings.Join(res.Timeline, "\n"), tt.wantTimeline) {
				t.Fatalf("timeline %q does not record %q", res.Timeline, tt.wantTimeline)
			}
			opened, _ := incidentEvents(t, f, agentID)
			if want := tt.actions; want != nil && tt.wantTimeline == "" && !slices.Equal(opened.GetActions(), want) {
				t.Fatalf("incident_opened actions = %v, want %v", opened.GetActions(), want)
			}
		})
	}
}

// TestIncidentLocalSuspensionFallsBack: when the local attempts at the suspension and the revocation
// fail with an error a retry may cure, the run hands each to a regular activity, which succeeds; the
// timeline says so and the agent is suspended.
func TestIncidentLocalSuspensionFallsBack(t *testing.T) {
	const agentID = "inclocal"
	f, _ := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_LOW)
	acts := f.logActivities()
	unavailable := temporal.NewApplicationError("registry.SuspendAgent: UNAVAILABLE: connection refused", "UNAVAILABLE")
	f.env.OnActivity(f.acts.IncidentSuspendAgent, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in workflows.IncidentSuspendRequest) (workflows.SuspendResult, error) {
			if activity.GetInfo(ctx).IsLocalActivity {
				return workflows.SuspendResult{}, unavailable
			}
			return f.acts.IncidentSuspendAgent(ctx, in)
		})
	f.env.OnActivity(f.acts.IncidentRevokeTokens, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in workflows.IncidentRevokeRequest) error {
			if activity.GetInfo(ctx).IsLocalActivity {
				return unavailable
			}
			return f.acts.IncidentRevokeTokens(ctx, in)
		})
	var waiting workflows.IncidentStatus
	f.env.RegisterDelayedCallback(func() { waiting = f.incidentStatus(t) }, 30*time.Minute)
	f.decide(time.Hour, "d", decisionToken(t, agentID, agentOwner, "owner", "restore"))
	in := incidentInput(agentID, "critical", "low")
	in.Actions = []string{"suspend", "notify"}
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, in)
	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeRestored {
		t.Fatalf("result = %+v, want restored", res)
	}
	want := []string{"local:IncidentSuspendAgent", "IncidentSuspendAgent", "local:IncidentRevokeTokens", "IncidentRevokeTokens", "RecordIncidentOpened"}
	if got := acts.all(); len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Fatalf("activities = %v, want them to start with %v", got, want)
	}
	if !slices.Equal(waiting.Taken[:2], []string{"suspended", "tokens revoked"}) {
		t.Fatalf("status while waiting = %+v, want suspended and tokens revoked", waiting)
	}
	if n := len(f.fakes.Requests("SuspendAgent")); n != 1 {
		t.Fatalf("%d suspend requests reached the registry, want 1 (the regular activity's)", n)
	}
	if !strings.Contains(strings.Join(res.Timeline, "\n"), "local attempts failed (registry.SuspendAgent: UNAVAILABLE") {
		t.Fatalf("timeline %q does not record the failed local attempts", res.Timeline)
	}
}
