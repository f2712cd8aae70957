package workflows_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// escalationFixture is a provisioning run of agentID that needs the approvals steps, with a
// recording notifier.
func escalationFixture(t *testing.T, agentID string, steps ...string) (*fixture, *notifications) {
	t.Helper()
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Policy.Decide(workflows.AgentName(tenant, agentID), &policyv1.Decision{
		DecisionId: "dec-" + agentID, Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: steps,
	})
	n := &notifications{}
	f.acts.Notifier = n
	return f, n
}

// update sends update "approve" at at and keeps its error (nil when it completed).
func (f *fixture) updateAt(t *testing.T, at time.Duration, id string, a workflows.Approval, got *error) {
	t.Helper()
	done := false
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.ApproveUpdate, id, &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { *got, done = err, true },
			OnComplete: func(_ any, err error) {
				*got, done = err, true
			},
		}, a)
	}, at)
	t.Cleanup(func() {
		if !done && !t.Failed() {
			t.Errorf("update %s at %s never ended", id, at)
		}
	})
}

// statusAt queries the status at at.
func (f *fixture) statusAt(t *testing.T, at time.Duration) *workflows.Status {
	var s workflows.Status
	f.env.RegisterDelayedCallback(func() { s = f.status(t) }, at)
	return &s
}

// noticeLog renders notices as kind:to@hours.
func noticeLog(start time.Time, notices []workflows.Notice) []string {
	var out []string
	for _, n := range notices {
		out = append(out, n.Kind+":"+n.To+"@"+n.Time.Sub(start).String())
	}
	return out
}

// Nobody decides: the owner is reminded, the step goes to approver, security-approver and
// tenant-admin in turn, each notified and reminded, and the request expires at the deadline.
func TestProvisionApprovalEscalatesAlongTheChainThenExpires(t *testing.T) {
	f, n := escalationFixture(t, "e1", "owner")
	start := f.env.Now()
	at23h, at25h := f.statusAt(t, 23*time.Hour), f.statusAt(t, 25*time.Hour)
	at49h, at97h, at145h := f.statusAt(t, 49*time.Hour), f.statusAt(t, 97*time.Hour), f.statusAt(t, 145*time.Hour)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("e1", "high"))

	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Result != "rejected" || !strings.HasPrefix(res.Reason, "approval expired: no decision by owner (last held by tenant-admin)") {
		t.Fatalf("result = %+v", res)
	}
	if elapsed := f.env.Now().Sub(start); elapsed < 7*24*time.Hour {
		t.Errorf("expired after %s, want 7 days", elapsed)
	}
	holders := []struct {
		name   string
		s      *workflows.Status
		stage  string
		holder string
		mayAct string // the last entry of may_act but the reject-only ones
	}{
		{"23h", at23h, "approval", "owner", "the agent's sponsor (the owner's delegate)"},
		{"25h", at25h, "approval", "owner", "the agent's sponsor (the owner's delegate)"},
		{"49h", at49h, "approval-escalated", "approver", "approver (escalated)"},
		{"97h", at97h, "approval-escalated", "security-approver", "security-approver (escalated)"},
		{"145h", at145h, "approval-escalated", "tenant-admin", "tenant-admin (escalated)"},
	}
	for _, h := range holders {
		s := h.s
		var granted []string
		for _, r := range s.MayAct {
			if !strings.HasSuffix(r, "(reject only)") {
				granted = append(granted, r)
			}
		}
		if s.Stage != h.stage || s.Holder != h.holder || len(granted) == 0 || granted[len(granted)-1] != h.mayAct ||
			!slices.Equal(s.EscalationChain, []string{"owner", "approver", "security-approver", "tenant-admin"}) {
			t.Errorf("status at %s = stage %s, holder %s, may act %v, chain %v; want %s, %s, ending %q",
				h.name, s.Stage, s.Holder, s.MayAct, s.EscalationChain, h.stage, h.holder, h.mayAct)
		}
	}
	if w := "approval by owner (escalated to approver)"; at49h.WaitingFor != w {
		t.Errorf("waiting for %q at 49h, want %q", at49h.WaitingFor, w)
	}
	if !slices.Contains(at145h.MayAct, "tenant-admin (escalated)") || slices.Contains(at145h.MayAct, "tenant-admin (reject only)") {
		t.Errorf("may act at 145h = %v", at145h.MayAct)
	}
	if got, want := at23h.NextReminder, start.Add(24*time.Hour).UTC(); !got.Equal(want) {
		t.Errorf("next reminder at 23h = %s, want %s", got, want)
	}
	if got, want := at25h.EscalatesAt, start.Add(48*time.Hour).UTC(); !got.Equal(want) {
		t.Errorf("escalates at (25h) = %s, want %s", got, want)
	}
	if !at145h.EscalatesAt.IsZero() || !at145h.Deadline.Equal(start.Add(7*24*time.Hour).UTC()) {
		t.Errorf("at 145h: escalates at %s (want none: tenant-admin is the last in line), deadline %s", at145h.EscalatesAt, at145h.Deadline)
	}

	want := []string{
		"approval.reminder:owner@24h0m0s", "approval.escalated:approver@48h0m0s",
		"approval.reminder:approver@72h0m0s", "approval.escalated:security-approver@96h0m0s",
		"approval.reminder:security-approver@120h0m0s", "approval.escalated:tenant-admin@144h0m0s",
	}
	final := f.status(t)
	if got := noticeLog(start, final.Notices); !slices.Equal(got, want) {
		t.Errorf("notices = %v, want %v", got, want)
	}
	for _, nt := range final.Notices {
		if !nt.Delivered || nt.Step != "owner" {
			t.Errorf("notice %+v: want delivered, about the owner step", nt)
		}
	}
	if final.Holder != "" || final.MayAct != nil || !final.NextReminder.IsZero() {
		t.Errorf("final status still shows a holder: %+v", final)
	}
	if got, want := n.recipients(), []string{
		"approval.reminder:owner", "approval.escalated:approver", "approval.reminder:approver",
		"approval.escalated:security-approver", "approval.reminder:security-approver", "approval.escalated:tenant-admin",
	}; !slices.Equal(got, want) {
		t.Fatalf("notifications = %v, want %v", got, want)
	}
	first := n.sent[0]
	if first.Recipient != agentOwner || first.Agent != "tenants/acme/agents/e1" || first.Tenant != tenant || first.Decider != "owner" ||
		first.WorkflowID != "provision/acme/e1" || first.RunID == "" || first.ID != "provision/acme/e1/notice-1" {
		t.Errorf("first notification = %+v", first)
	}
	if esc := n.sent[1]; esc.Recipient != "" || !strings.Contains(esc.Summary, "handed from owner to approver") {
		t.Errorf("escalation notification = %+v", esc)
	}
	if got, want := f.stages.all(), []string{"policy", "approval", "approval-escalated", "reject", "done"}; !slices.Equal(got, want) {
		t.Errorf("stages = %v, want %v", got, want)
	}
	if rej := workflowstest.RequestsOf[*registryv1.RejectAgentRequest](f.fakes, "RejectAgent"); len(rej) != 1 {
		t.Fatalf("RejectAgent calls = %d", len(rej))
	}
}

// Once the owner step is handed to approver, an approver decides it (refused before); the next step
// starts again with its own first holder.
func TestProvisionEscalatedStepDecidedByNextInLine(t *testing.T) {
	f, n := escalationFixture(t, "e2", "owner", "security")
	var early, adminTooEarly, escalated, security error
	f.updateAt(t, time.Hour, "early", tokenApproval(t, "e2", "carol@corp", "owner", "approve", "", "approver"), &early)
	f.updateAt(t, 49*time.Hour, "admin", tokenApproval(t, "e2", "dave@corp", "owner", "approve", "", "tenant-admin"), &adminTooEarly)
	f.updateAt(t, 49*time.Hour+time.Minute, "escalated", tokenApproval(t, "e2", "carol@corp", "owner", "approve", "owner away", "approver"), &escalated)
	at50h := f.statusAt(t, 50*time.Hour)
	f.updateAt(t, 51*time.Hour, "security", tokenApproval(t, "e2", "bob@corp", "security", "approve", "", "security-approver"), &security)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("e2", "high"))

	if early == nil || !workflows.IsApprovalRefused(early) || !strings.Contains(early.Error(), "the owner step is decided by the agent's owner") {
		t.Errorf("approver before the escalation: %v, want refused", early)
	}
	if adminTooEarly == nil || !strings.Contains(adminTooEarly.Error(), "escalated to approver") {
		t.Errorf("tenant-admin before the step reached it: %v, want refused", adminTooEarly)
	}
	if escalated != nil || security != nil {
		t.Fatalf("approvals after the escalation: %v, %v", escalated, security)
	}
	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Result != "activated" || strings.Join(res.ApprovedBy, ",") != "carol@corp,bob@corp" {
		t.Fatalf("result = %+v", res)
	}
	if at50h.Stage != "approval" || at50h.Holder != "security-approver" || at50h.WaitingFor != "approval by security" ||
		len(at50h.ApprovalsSoFar) != 1 || at50h.ApprovalsSoFar[0].Role != "approver" || at50h.ApprovalsSoFar[0].Step != "owner" {
		t.Errorf("status at 50h = %+v", *at50h)
	}
	final := f.status(t)
	if final.RefusedCount != 2 {
		t.Errorf("refused = %d (%+v), want 2", final.RefusedCount, final.Refused)
	}
	if got, want := n.recipients(), []string{"approval.reminder:owner", "approval.escalated:approver"}; !slices.Equal(got, want) {
		t.Errorf("notifications = %v, want %v", got, want)
	}
	if got, want := f.stages.all(), []string{"policy", "approval", "approval-escalated", "approval", "done"}; !slices.Equal(got, want) {
		t.Errorf("stages = %v, want %v", got, want)
	}
}

// Reminders follow the run's RemindEvery until the decision; a notice that cannot be delivered is
// recorded and changes nothing else.
func TestProvisionApprovalReminders(t *testing.T) {
	refused := temporal.NewNonRetryableApplicationError("notify: refused: 410 Gone", "NOTIFICATION_REFUSED", nil)
	tests := []struct {
		name          string
		remind        time.Duration
		escalate      time.Duration
		approveAt     time.Duration
		notifier      bool
		fail          error
		want          []string
		wantDelivered bool
		wantDetail    string
	}{
		{"every 6h", 6 * time.Hour, 0, 20 * time.Hour, true, nil,
			[]string{"approval.reminder:security-approver@6h0m0s", "approval.reminder:security-approver@12h0m0s", "approval.reminder:security-approver@18h0m0s"}, true, ""},
		{"defaults", 0, 0, 30 * time.Hour, true, nil, []string{"approval.reminder:security-approver@24h0m0s"}, true, ""},
		{"escalation first", 10 * time.Hour, 15 * time.Hour, 26 * time.Hour, true, nil,
			[]string{"approval.reminder:security-approver@10h0m0s", "approval.escalated:tenant-admin@15h0m0s", "approval.reminder:tenant-admin@25h0m0s"}, true, ""},
		{"refused by the webhook", 6 * time.Hour, 0, 7 * time.Hour, true, refused, []string{"approval.reminder:security-approver@6h0m0s"}, false, "NOTIFICATION_REFUSED"},
		{"no notifier", 6 * time.Hour, 0, 7 * time.Hour, false, nil, []string{"approval.reminder:security-approver@6h0m0s"}, false, "no notifier configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n := escalationFixture(t, "e3", "security")
			n.fail = tt.fail
			if !tt.notifier {
				f.acts.Notifier = nil
			}
			start := f.env.Now()
			approver := "bob@corp"
			roles := []string{"security-approver"}
			if tt.escalate > 0 && tt.approveAt > tt.escalate {
				approver, roles = "dave@corp", []string{"tenant-admin"}
			}
			var err error
			f.updateAt(t, tt.approveAt, "u", tokenApproval(t, "e3", approver, "security", "approve", "", roles...), &err)
			in := provisionInput("e3", "high")
			in.RemindEvery, in.EscalateAfter = tt.remind, tt.escalate

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, in)

			if err != nil {
				t.Fatalf("approval: %v", err)
			}
			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != "activated" {
				t.Fatalf("result = %+v, %v", res, err)
			}
			final := f.status(t)
			if got := noticeLog(start, final.Notices); !slices.Equal(got, tt.want) {
				t.Fatalf("notices = %v, want %v", got, tt.want)
			}
			for _, nt := range final.Notices {
				if nt.Delivered != tt.wantDelivered || !strings.Contains(nt.Detail, tt.wantDetail) {
					t.Errorf("notice %+v: want delivered %t, detail %q", nt, tt.wantDelivered, tt.wantDetail)
				}
			}
			if tt.wantDelivered && len(n.sent) != len(tt.want) {
				t.Errorf("notifier got %d notifications, want %d", len(n.sent), len(tt.want))
			}
		})
	}
}

func TestEscalationChain(t *testing.T) {
	tests := []struct {
		step string
		want []string
	}{
		{"owner", []string{"owner", "approver", "security-approver", "tenant-admin"}},
		{"security", []string{"security-approver", "tenant-admin"}},
		{"compliance", []string{"compliance-approver", "tenant-admin"}},
		{"approver", []string{"approver", "security-approver", "tenant-admin"}},
		{"tenant-admin", []string{"tenant-admin"}},
		{"legal", []string{"legal", "tenant-admin"}},
	}
	for _, tt := range tests {
		if got := workflows.EscalationChain(tt.step); !slices.Equal(got, tt.want) {
			t.Errorf("EscalationChain(%q) = %v, want %v", tt.step, got, tt.want)
		}
	}
	if got, want := workflows.MayDecideEscalated("security", 1), []string{"security-approver", "tenant-admin (escalated)", "approver (reject only)"}; !slices.Equal(got, want) {
		t.Errorf("MayDecideEscalated(security, 1) = %v, want %v", got, want)
	}
	if got, want := workflows.MayDecideEscalated("security", 0), workflows.MayDecide("security"); !slices.Equal(got, want) {
		t.Errorf("MayDecideEscalated(security, 0) = %v, want MayDecide %v", got, want)
	}
}
