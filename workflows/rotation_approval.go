package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"
)

// DefaultRotationApprovalTimeout is how long a rotation of a high- or critical-tier agent waits for
// the owner's decision before it rejects the new key.
const DefaultRotationApprovalTimeout = 7 * 24 * time.Hour

// StageRotationApproval is the stage of a rotation waiting for the owner's decision.
const StageRotationApproval = "rotation-approval"

// rotationNeedsApproval says whether a rotation of an agent of riskTier (without the RISK_TIER_
// prefix) waits for the owner's approval before the new key is added to the client: every tier but
// LOW and MODERATE does (HIGH, and fail closed any tier this code does not know).
func rotationNeedsApproval(riskTier string) bool {
	return riskTier != "LOW" && riskTier != "MODERATE"
}

// RotationDecision is the owner's decision on the new key of a rotation, sent as update "decide"
// (DecideUpdate). It counts only with an approval token of the issuer for this run, step owner and
// decision approve or reject.
type RotationDecision struct {
	// Token is the approval token.
	Token string `json:"token"`
	// Decision is "approve" or "reject"; empty takes the token's. When set it must match the token's.
	Decision string `json:"decision,omitempty"`
	// Comment is recorded with the decision.
	Comment string `json:"comment,omitempty"`
	// SubmittedBy is the authenticated caller who submitted the token ("" for a direct update); a
	// token issued to someone else is refused.
	SubmittedBy string `json:"submitted_by,omitempty"`
}

// normalize trims the decision's fields and lower-cases the decision.
func (d RotationDecision) normalize() RotationDecision {
	d.Token = strings.TrimSpace(d.Token)
	d.Decision = strings.ToLower(strings.TrimSpace(d.Decision))
	d.Comment = strings.TrimSpace(d.Comment)
	d.SubmittedBy = strings.TrimSpace(d.SubmittedBy)
	return d
}

// RotationStatus is the answer of query "status" and update "decide" of a rotation run.
type RotationStatus struct {
	// Stage is the current stage.
	Stage string `json:"stage"`
	// NewKey is the thumbprint of the rotation's new key.
	NewKey string `json:"new_key"`
	// RiskTier is the agent's risk tier when the run read it (without the RISK_TIER_ prefix).
	RiskTier string `json:"risk_tier,omitempty"`
	// WaitingFor says what the run waits for, e.g. "approval by owner"; empty when it is not waiting.
	WaitingFor string `json:"waiting_for,omitempty"`
	// Step is the approval step the run waits for (StepOwner), empty when it waits for none.
	Step string `json:"step,omitempty"`
	// MayAct lists who may decide the step the run waits for.
	MayAct []string `json:"may_act,omitempty"`
	// Due is when an undecided approval rejects the new key.
	Due time.Time `json:"due,omitzero"`
	// Decision is the decision taken, if any.
	Decision *TakenDecision `json:"decision,omitempty"`
	// Result is the run's result once it is known.
	Result string `json:"result,omitempty"`
	// Refused are the newest refused decisions; RefusedCount counts all of them.
	Refused      []Refusal `json:"refused,omitempty"`
	RefusedCount int       `json:"refused_count,omitempty"`
}

// RotationApprovalRoles lists who may decide a rotation's owner step: the agent's owner or its
// sponsor (the owner's delegate) approve or reject; approver and tenant-admin may only reject.
func RotationApprovalRoles() []string {
	out := []string{"the agent's owner", "the agent's sponsor (the owner's delegate)"}
	for _, r := range RejectAnyStepRoles {
		out = append(out, r+" (reject only)")
	}
	return out
}

// rotationApprovalRolesFor lists who may decide a rotation's owner step since
// versionRotationApprovalDuties: the agent's owner or sponsor or a security-approver approve or
// reject, except that whoever added the key (addedBy, when known) may only reject it; approver and
// tenant-admin may only reject.
func rotationApprovalRolesFor(addedBy string) []string {
	out := []string{"the agent's owner", "the agent's sponsor (the owner's delegate)", HolderSecurityApprover}
	if addedBy != "" {
		out = append(out, "not "+addedBy+", who added the key (reject only)")
	}
	for _, r := range RejectAnyStepRoles {
		out = append(out, r+" (reject only)")
	}
	return out
}

// rotationGate is the owner approval of a rotation run: its status, the decision taken and the
// approval tokens presented.
type rotationGate struct {
	tokenGate
	agent   string
	status  RotationStatus
	decided *TakenDecision
	// duties (since versionRotationApprovalDuties): whoever added the key (addedBy) may not approve
	// it, a security-approver may decide it, and once the approval times out no further decision is
	// verified (closed).
	duties   bool
	addedBy  string
	closed   bool
	closedAt time.Time
}

// registerHandlers installs query "status" and update "decide".
func (g *rotationGate) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (RotationStatus, error) { return g.snapshot(), nil }); err != nil {
		return err
	}
	return workflow.SetUpdateHandlerWithOptions(ctx, DecideUpdate,
		func(ctx workflow.Context, d RotationDecision) (RotationStatus, error) {
			if err := g.verify(ctx, d); err != nil {
				return RotationStatus{}, err
			}
			return g.snapshot(), nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, d RotationDecision) error {
			return g.precheck(d.normalize())
		}},
	)
}

// snapshot is a copy of the status.
func (g *rotationGate) snapshot() RotationStatus {
	s := g.status
	s.MayAct = slices.Clone(s.MayAct)
	s.Refused = slices.Clone(s.Refused)
	if g.decided != nil {
		d := *g.decided
		s.Decision = &d
	}
	return s
}

// waiting refuses a decision while the run is not waiting for one.
func (g *rotationGate) waiting() error {
	switch {
	case g.decided != nil:
		return refusedf("the new key has been decided already (%s by %s)", g.decided.Decision, g.decided.Decider)
	case g.status.Step == "":
		return refusedf("the rotation run is not waiting for an approval (stage %s)", g.status.Stage)
	}
	return nil
}

// precheck refuses, without verifying anything, a decision that cannot count.
func (g *rotationGate) precheck(d RotationDecision) error {
	if g.closed {
		return refusedf("the approval of the new key timed out at %s", g.closedAt.Format(time.RFC3339))
	}
	if err := g.waiting(); err != nil {
		return err
	}
	if err := tokenRefusal(d.Token, "the new key counts only with an approval token of the issuer for this run, step owner and the decision"); err != nil {
		return err
	}
	return decisionRefusal(d.Decision, DecisionApprove, DecisionReject)
}

// verify checks d's approval token with VerifyApproval and the run's rules and, when it counts, takes
// the decision. A refused decision is recorded in the status and changes nothing.
func (g *rotationGate) verify(ctx workflow.Context, d RotationDecision) error {
	d = d.normalize()
	return g.decide(ctx, tokenDecision{
		Agent: g.agent, Token: d.Token, Decision: d.Decision,
		Precheck:      func() error { return g.precheck(d) },
		PrecheckAgain: true,
		Judge: func(v VerifiedApproval) error {
			taken, err := g.judge(ctx, d, v)
			if err != nil {
				return err
			}
			g.decided = &taken
			g.status.WaitingFor, g.status.MayAct, g.status.Step, g.status.Due = "", nil, "", time.Time{}
			return nil
		},
		Refuse: func(decider, decision string, err error) error { return g.refuse(ctx, decider, decision, err) },
	})
}

// judge applies the run's rules to a verified token: bound to this agent and run, used once, an
// approve or reject decision for the owner step, by the owner or its sponsor (approver and
// tenant-admin may reject).
func (g *rotationGate) judge(ctx workflow.Context, d RotationDecision, v VerifiedApproval) (TakenDecision, error) {
	if err := g.bind(ctx, g.agent, "this rotation run", v); err != nil {
		return TakenDecision{}, err
	}
	if err := callerRefusal(d.SubmittedBy, v); err != nil {
		return TakenDecision{}, err
	}
	switch {
	case v.Decision != DecisionApprove && v.Decision != DecisionReject:
		return TakenDecision{}, refusedf("a new key is decided with %q or %q, the approval token is for %q", DecisionApprove, DecisionReject, v.Decision)
	case d.Decision != "" && d.Decision != v.Decision:
		return TakenDecision{}, refusedf("the approval token is for %s, the request says %s", v.Decision, d.Decision)
	}
	if err := g.waiting(); err != nil {
		return TakenDecision{}, err
	}
	if v.Step != g.status.Step {
		return TakenDecision{}, refusedf("the approval token is for the %s step, the rotation waits for approval by %s", v.Step, g.status.Step)
	}
	role := ownerRole(v)
	if g.duties {
		if role == "" && slices.Contains(v.Roles, HolderSecurityApprover) {
			role = HolderSecurityApprover
		}
		if v.Decision == DecisionApprove && g.addedBy != "" && v.Subject == g.addedBy {
			return TakenDecision{}, refusedf("%s added the new key and may not approve it: %v", v.Subject, rotationApprovalRolesFor(g.addedBy))
		}
	}
	if role == "" && v.Decision == DecisionReject {
		for _, r := range RejectAnyStepRoles {
			if slices.Contains(v.Roles, r) {
				role = r
				break
			}
		}
	}
	if role == "" {
		roles := RotationApprovalRoles()
		if g.duties {
			roles = rotationApprovalRolesFor(g.addedBy)
		}
		return TakenDecision{}, refusedf("the new key of an agent is decided by %v; %s holds %v", roles, v.Subject, v.Roles)
	}
	return TakenDecision{Decider: v.Subject, Role: role, Step: g.status.Step, Decision: v.Decision, Comment: d.Comment,
		TokenID: v.TokenID, Time: workflow.Now(ctx).UTC()}, nil
}

// refuse records a refused decision in the status and the log and returns err.
func (g *rotationGate) refuse(ctx workflow.Context, decider, decision string, err error) error {
	keepRefusal(&g.status.Refused, &g.status.RefusedCount, Refusal{
		Time: workflow.Now(ctx), Approver: decider, Step: StepOwner, Decision: decision, Reason: err.Error(),
	})
	workflow.GetLogger(ctx).Warn("rotation decision refused", "agent", g.agent, "decider", decider, "error", err)
	return err
}

// awaitOwner waits up to timeout for the owner's decision and returns it; nil when none was taken in
// time. A verification under way when the timeout fires is judged first.
func (g *rotationGate) awaitOwner(ctx workflow.Context, timeout time.Duration) (*TakenDecision, error) {
	g.status.Step, g.status.WaitingFor, g.status.MayAct = StepOwner, "approval by "+StepOwner, RotationApprovalRoles()
	if g.duties {
		g.status.MayAct = rotationApprovalRolesFor(g.addedBy)
	}
	g.status.Due = workflow.Now(ctx).Add(timeout).UTC()
	if _, err := workflow.AwaitWithTimeout(ctx, timeout, func() bool { return g.decided != nil }); err != nil {
		return nil, err
	}
	if g.decided == nil {
		// Since versionRotationApprovalDuties only the verification under way is judged: decisions
		// queued behind it are refused unverified, so refused ones cannot stretch the timeout.
		g.closed, g.closedAt = g.duties, g.status.Due
		if err := workflow.Await(ctx, func() bool { return !g.verifying }); err != nil {
			return nil, err
		}
	}
	g.status.WaitingFor, g.status.MayAct, g.status.Step, g.status.Due = "", nil, "", time.Time{}
	return g.decided, nil
}

// rejectDetail says why a rotation rejected its new key.
func rejectDetail(d *TakenDecision, timeout time.Duration) string {
	if d == nil {
		return fmt.Sprintf("nobody decided the new key within %s: it was removed from the registry and never added to the client", timeout)
	}
	return fmt.Sprintf("the new key was rejected by %s (%s): it was removed from the registry and never added to the client", d.Decider, d.Role)
}
