package workflows_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/authn"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// rotationDecided is the outcome of one update "decide" sent to a rotation run.
type rotationDecided struct {
	rejected  error
	completed error
	status    workflows.RotationStatus
}

// decideRotation sends update "decide" to the rotation run at the given time.
func (f *fixture) decideRotation(at time.Duration, d workflows.RotationDecision) *rotationDecided {
	out := &rotationDecided{}
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.DecideUpdate, "", &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { out.rejected = err },
			OnComplete: func(v any, err error) {
				out.completed = err
				if err == nil {
					out.status = v.(workflows.RotationStatus)
				}
			},
		}, d)
	}, at)
	return out
}

// err is the update's refusal, by its validator or its handler.
func (d *rotationDecided) err() error {
	if d.rejected != nil {
		return d.rejected
	}
	return d.completed
}

// rotationStatus queries the rotation run's status.
func (f *fixture) rotationStatus(t *testing.T) workflows.RotationStatus {
	t.Helper()
	v, err := f.env.QueryWorkflow(workflows.StatusQuery)
	if err != nil {
		t.Fatalf("query status: %v", err)
	}
	var s workflows.RotationStatus
	if err := v.Get(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// rotationToken is a decision carrying an approval token of sub for step and decision on run.
func rotationToken(t *testing.T, agentID, sub, step, decision, run string, roles ...string) workflows.RotationDecision {
	t.Helper()
	return workflows.RotationDecision{Comment: "expected", Token: approvalIssuer(t).Token(t, authn.ApprovalClaims{
		Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step, Decision: decision, Run: run, Roles: roles,
	})}
}

// highTierRotation sets up a rotation of an ACTIVE agent of tier.
func highTierRotation(t *testing.T, f *fixture, id string, tier registryv1.RiskTier) workflows.RotationInput {
	t.Helper()
	in, _ := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	a := f.fakes.Registry.Agent(in.Agent)
	a.RiskTier = tier
	f.fakes.Registry.Put(a)
	return in
}

// TestRotationOwnerApproves: the new key of a high-tier agent is not added to the client while the
// run waits for the owner (status: waiting for approval by owner); tokens for another step, another
// run, another person, an approve by a reject-only role and a token used twice are refused and
// recorded; the owner's approval adds the key and the rotation completes.
func TestRotationOwnerApproves(t *testing.T) {
	const id = "ra1"
	f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
	notes := &recordingNotifier{}
	f.acts.Notifier = notes
	in := highTierRotation(t, f, id, registryv1.RiskTier_RISK_TIER_HIGH)
	run := workflowstest.TestRunID
	var waiting workflows.RotationStatus
	var keysWaiting []string
	f.env.RegisterDelayedCallback(func() { waiting, keysWaiting = f.rotationStatus(t), clientKeys(t, f, id) }, time.Hour)
	refused := []struct {
		name string
		d    workflows.RotationDecision
		want string
	}{
		{"another step", rotationToken(t, id, agentOwner, workflows.StepSecurity, workflows.DecisionApprove, run, "security-approver"), "security step"},
		{"another run", rotationToken(t, id, agentOwner, workflows.StepOwner, workflows.DecisionApprove, "other-run"), "for run other-run"},
		{"another person", rotationToken(t, id, "mallory@corp.example", workflows.StepOwner, workflows.DecisionApprove, run), "mallory@corp.example holds"},
		{"an approver approving", rotationToken(t, id, "bob@corp.example", workflows.StepOwner, workflows.DecisionApprove, run, "approver"), "bob@corp.example holds"},
		{"no token", workflows.RotationDecision{Decision: workflows.DecisionApprove}, "no approval token"},
		{"another caller", func() workflows.RotationDecision {
			d := rotationToken(t, id, agentOwner, workflows.StepOwner, workflows.DecisionApprove, run)
			d.SubmittedBy = "mallory@corp.example"
			return d
		}(), "not to the caller"},
	}
	var outs []*rotationDecided
	for i, r := range refused {
		outs = append(outs, f.decideRotation(2*time.Hour+time.Duration(i)*time.Minute, r.d))
	}
	approve := rotationToken(t, id, agentOwner, workflows.StepOwner, workflows.DecisionApprove, run)
	approved := f.decideRotation(3*time.Hour, approve)
	again := f.decideRotation(3*time.Hour+time.Minute, approve)
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	var res workflows.RotationResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if waiting.Stage != workflows.StageRotationApproval || waiting.WaitingFor != "approval by owner" || waiting.Step != workflows.StepOwner ||
		waiting.RiskTier != "HIGH" || waiting.Due.IsZero() || len(waiting.MayAct) == 0 {
		t.Fatalf("status while waiting = %+v, want waiting for approval by owner", waiting)
	}
	if slices.Contains(keysWaiting, in.NewKeyThumbprint) {
		t.Fatalf("client keys while waiting = %v: the new key was added before the owner approved", keysWaiting)
	}
	for i, r := range refused {
		if err := outs[i].err(); !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: err = %v, want refused with %q", r.name, err, r.want)
		}
	}
	if approved.err() != nil || approved.status.Decision == nil || approved.status.Decision.Decider != agentOwner || approved.status.Decision.Role != "owner" {
		t.Fatalf("the owner's approval: %+v, %v", approved.status, approved.err())
	}
	if err := again.err(); !workflows.IsApprovalRefused(err) {
		t.Fatalf("a second decision: err = %v, want refused", err)
	}
	if approved.status.RefusedCount < 4 {
		t.Fatalf("refusals recorded = %d (%+v), want the verified refusals recorded", approved.status.RefusedCount, approved.status.Refused)
	}
	if res.Result != workflows.ResultRotated || res.Decision == nil || res.Decision.Decision != workflows.DecisionApprove {
		t.Fatalf("result = %+v, want rotated with the owner's approval", res)
	}
	if got := clientKeys(t, f, id); !slices.Equal(got, []string{in.NewKeyThumbprint}) {
		t.Fatalf("client keys after = %v, want only the new key", got)
	}
	if sent := notes.all(); len(sent) != 1 || !strings.Contains(sent[0].Summary, "waits for your approval") {
		t.Fatalf("notifications = %+v, want the owner asked to approve", sent)
	}
	recs := keyRotated(t, f, id)
	if len(recs) != 1 || recs[0].GetOutcome() != workflows.ResultRotated || !strings.Contains(recs[0].GetDetail(), agentOwner) {
		t.Fatalf("key_rotated = %v", recs)
	}
}

// TestRotationOwnerRejectsOrTimesOut: a rejection by the owner, by an approver (reject only), or no
// decision within the approval timeout removes the new key from the registry, adds nothing to the
// client, revokes nothing, and records a rejected rotation.
func TestRotationOwnerRejectsOrTimesOut(t *testing.T) {
	cases := []struct {
		name      string
		tier      registryv1.RiskTier
		decider   string
		roles     []string
		wantRole  string
		wantAfter time.Duration
	}{
		{"owner rejects", registryv1.RiskTier_RISK_TIER_UNSPECIFIED, agentOwner, nil, "owner", 0},
		{"sponsor rejects as delegate", registryv1.RiskTier_RISK_TIER_HIGH, agentSponsor, nil, "owner-delegate", 0},
		{"approver rejects", registryv1.RiskTier_RISK_TIER_HIGH, "bob@corp.example", []string{"approver"}, "approver", 0},
		{"timeout", registryv1.RiskTier_RISK_TIER_UNSPECIFIED, "", nil, "", 5 * time.Hour},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "rr" + string(rune('0'+i))
			f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
			in := highTierRotation(t, f, id, tc.tier)
			in.ApprovalTimeout = 5 * time.Hour
			var out *rotationDecided
			if tc.decider != "" {
				out = f.decideRotation(time.Hour, rotationToken(t, id, tc.decider, workflows.StepOwner, workflows.DecisionReject, workflowstest.TestRunID, tc.roles...))
			}
			start := f.env.Now()
			f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
			var res workflows.RotationResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != workflows.ResultRejected || len(res.RemovedKeys) != 0 {
				t.Fatalf("result = %+v, want rejected", res)
			}
			if tc.decider != "" {
				if out.err() != nil || res.Decision == nil || res.Decision.Role != tc.wantRole || res.Decision.Decision != workflows.DecisionReject {
					t.Fatalf("decision = %+v, %v; want a reject as %s", res.Decision, out.err(), tc.wantRole)
				}
			} else if res.Decision != nil || f.env.Now().Sub(start) < tc.wantAfter {
				t.Fatalf("timeout: decision %+v after %s, want none after %s", res.Decision, f.env.Now().Sub(start), tc.wantAfter)
			}
			if n := len(f.fakes.Requests("AddClientKey")) + len(f.fakes.Requests("RevokeTokens")) + len(f.fakes.Requests("RemoveClientKey")); n != 0 {
				t.Fatalf("the client was changed or tokens revoked (%d calls)", n)
			}
			rm := workflowstest.RequestsOf[*registryv1.RemoveAgentKeyRequest](f.fakes, "RemoveAgentKey")
			if len(rm) != 1 || rm[0].GetThumbprint() != in.NewKeyThumbprint {
				t.Fatalf("RemoveAgentKey = %v, want the new key removed from the registry", rm)
			}
			for _, k := range f.fakes.Registry.Agent(in.Agent).GetKeys() {
				if k.GetThumbprint() == in.NewKeyThumbprint {
					t.Fatal("the rejected key is still registered")
				}
			}
			recs := keyRotated(t, f, id)
			if len(recs) != 1 || recs[0].GetOutcome() != workflows.ResultRejected || recs[0].GetDetail() == "" {
				t.Fatalf("key_rotated = %v", recs)
			}
		})
	}
}

// TestRotationModerateNeedsNoApproval: a moderate-tier agent's key is added without waiting.
func TestRotationModerateNeedsNoApproval(t *testing.T) {
	const id = "rm1"
	f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
	in, _ := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	var during []string
	f.env.RegisterDelayedCallback(func() { during = clientKeys(t, f, id) }, time.Minute)
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	var res workflows.RotationResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(during, in.NewKeyThumbprint) || res.Result != workflows.ResultRotated || res.Decision != nil {
		t.Fatalf("client keys after a minute = %v, result %+v; want the key added without approval", during, res)
	}
}

// TestRotationSeparatesDuties: whoever added the new key of a high-tier agent may not approve it —
// the refusal is recorded and changes nothing (the key stays off the client, the run keeps waiting) —
// while the sponsor or a security-approver may; the key_rotated event says who decided, in which
// role.
func TestRotationSeparatesDuties(t *testing.T) {
	cases := []struct {
		name, addedBy, decider string
		roles                  []string
		wantRole               string
	}{
		{"owner added, sponsor approves", agentOwner, agentSponsor, nil, "owner-delegate"},
		{"owner added, security-approver approves", agentOwner, "sec@corp.example", []string{"security-approver"}, "security-approver"},
		{"sponsor added, owner approves", agentSponsor, agentOwner, nil, "owner"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "rsd" + string(rune('0'+i))
			f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
			in := highTierRotation(t, f, id, registryv1.RiskTier_RISK_TIER_HIGH)
			in.AddedBy = tc.addedBy
			run := workflowstest.TestRunID
			self := f.decideRotation(time.Hour, rotationToken(t, id, tc.addedBy, workflows.StepOwner, workflows.DecisionApprove, run))
			var afterSelf workflows.RotationStatus
			var keysAfterSelf []string
			f.env.RegisterDelayedCallback(func() { afterSelf, keysAfterSelf = f.rotationStatus(t), clientKeys(t, f, id) }, 90*time.Minute)
			other := f.decideRotation(2*time.Hour, rotationToken(t, id, tc.decider, workflows.StepOwner, workflows.DecisionApprove, run, tc.roles...))
			f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
			var res workflows.RotationResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if err := self.err(); !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), "added the new key") {
				t.Fatalf("approval by %s, who added the key: %v, want refused", tc.addedBy, err)
			}
			if afterSelf.WaitingFor != "approval by owner" || afterSelf.RefusedCount != 1 || afterSelf.Decision != nil || slices.Contains(keysAfterSelf, in.NewKeyThumbprint) {
				t.Fatalf("after the refused approval: status %+v, client keys %v; want still waiting, the refusal recorded, the key off the client", afterSelf, keysAfterSelf)
			}
			if other.err() != nil || res.Result != workflows.ResultRotated || res.Decision == nil || res.Decision.Decider != tc.decider || res.Decision.Role != tc.wantRole {
				t.Fatalf("approval by %s: %v; result %+v, want rotated, decided as %s", tc.decider, other.err(), res, tc.wantRole)
			}
			recs := keyRotated(t, f, id)
			if len(recs) != 1 || recs[0].GetDecidedBy() != tc.decider || recs[0].GetDecidedRole() != tc.wantRole ||
				recs[0].GetDecision() != workflows.DecisionApprove || recs[0].GetDecisionTime() == nil {
				t.Fatalf("key_rotated = %v, want decided by %s as %s", recs, tc.decider, tc.wantRole)
			}
		})
	}
}
