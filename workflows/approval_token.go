package workflows

import (
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// maxApprovalTokenLen bounds the token a run sends to VerifyApproval.
const maxApprovalTokenLen = 16 << 10

// verifyApprovalOptions bound the verification of one approval token: a person waits for the answer.
var verifyApprovalOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    10 * time.Second,
	ScheduleToCloseTimeout: time.Minute,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    10 * time.Second,
	},
}

// tokensRequired reports whether the run takes approvals only with approval tokens, deciding it (and
// recording the version marker) the first time an approval is handled.
func (p *provision) tokensRequired(ctx workflow.Context) bool {
	if !p.versionKnown {
		p.version = workflow.GetVersion(ctx, versionApprovalToken, workflow.DefaultVersion, 1)
		p.versionKnown = true
	}
	return p.version >= 1
}

// precheck refuses, without verifying anything, an approval that cannot count: the run is not
// waiting, or it carries no token (e.g. the self-asserted JSON of earlier versions).
func (p *provision) precheck(a Approval) error {
	if err := p.waiting(); err != nil {
		return err
	}
	if err := tokenRefusal(a.Token, `an approval counts only with a token from the issuer (agentctl approvals token), sent as {"token":"..."}`); err != nil {
		return err
	}
	return decisionRefusal(a.Decision, DecisionApprove, DecisionReject)
}

// verify checks a's approval token with VerifyApproval and the run's rules, and returns the approval
// as it counts: approver, role, decision and step from the verified token. A refused approval is
// recorded in the status (refuse) and returned as an ErrApprovalRefused error saying why.
func (p *provision) verify(ctx workflow.Context, a Approval) (Approval, error) {
	var taken Approval
	err := p.decide(ctx, tokenDecision{
		Agent: p.in.Agent, Token: a.Token, Decision: a.Decision,
		Precheck: func() error { return p.precheck(a) },
		Judge: func(v VerifiedApproval) error {
			var err error
			taken, err = p.judge(ctx, a, v)
			return err
		},
		Refuse: func(approver, decision string, err error) error { return p.refuse(ctx, approver, decision, err) },
	})
	if err != nil {
		return Approval{}, err
	}
	return taken, nil
}

// judge applies the run's rules to a verified token: bound to this agent and run, used once, for the
// step the run waits for, by someone who may decide it; an approval also by someone who neither
// registered the agent nor approved another step.
func (p *provision) judge(ctx workflow.Context, a Approval, v VerifiedApproval) (Approval, error) {
	refused := func(format string, args ...any) (Approval, error) {
		return Approval{}, fmt.Errorf("%w: "+format, append([]any{ErrApprovalRefused}, args...)...)
	}
	if err := p.bind(ctx, p.in.Agent, "this run", v); err != nil {
		return Approval{}, err
	}
	if err := callerRefusal(a.SubmittedBy, v); err != nil {
		return Approval{}, err
	}
	switch {
	case a.Decision != "" && a.Decision != v.Decision:
		return refused("the approval token is for %s, the request says %s", v.Decision, a.Decision)
	case v.Decision != DecisionApprove && v.Decision != DecisionReject:
		return refused("decision %q is neither %q nor %q", v.Decision, DecisionApprove, DecisionReject)
	}
	if err := p.waiting(); err != nil {
		return Approval{}, err
	}
	next := len(p.status.ApprovalsSoFar) + len(p.pending)
	if next >= len(p.status.RequiredApprovals) {
		return refused("every required approval has been submitted")
	}
	step := p.status.RequiredApprovals[next]
	if v.Step != step {
		return refused("the approval token is for the %s step, the run waits for the %s step", v.Step, step)
	}
	role, err := p.decidingRole(step, next, v)
	if err != nil {
		return Approval{}, err
	}
	taken := Approval{Approver: v.Subject, Role: role, Decision: v.Decision, Comment: a.Comment, Step: step, TokenID: v.TokenID}
	if taken.Decision != DecisionApprove {
		return taken, nil
	}
	if p.in.Registrant != "" && v.Subject == p.in.Registrant {
		return refused("%s registered the agent and cannot approve it", v.Subject)
	}
	if err := p.separate(taken); err != nil {
		return Approval{}, err
	}
	return taken, nil
}

// stepRole is the role in which v's subject decides step, or why it may not: the owner step by the
// agent's owner or sponsor (the owner's delegate), security by security-approver, compliance by
// compliance-approver, any other step by the role of its name or approver; a rejection also by one of
// RejectAnyStepRoles.
func stepRole(step string, v VerifiedApproval) (string, error) {
	switch step {
	case StepOwner:
		if role := ownerRole(v); role != "" {
			return role, nil
		}
	case StepSecurity:
		if slices.Contains(v.Roles, "security-approver") {
			return "security-approver", nil
		}
	case StepCompliance:
		if slices.Contains(v.Roles, "compliance-approver") {
			return "compliance-approver", nil
		}
	default:
		for _, r := range []string{step, "approver"} {
			if slices.Contains(v.Roles, r) {
				return r, nil
			}
		}
	}
	if v.Decision == DecisionReject {
		for _, r := range RejectAnyStepRoles {
			if slices.Contains(v.Roles, r) {
				return r, nil
			}
		}
	}
	if step == StepOwner {
		return "", fmt.Errorf("%w: the owner step is decided by the agent's owner (%s) or its sponsor, not %s", ErrApprovalRefused, v.Owner, v.Subject)
	}
	return "", fmt.Errorf("%w: the %s step is decided by %v; %s holds %v", ErrApprovalRefused, step, StepRoles(step), v.Subject, v.Roles)
}

// refuse records a refused approval in the status and the log and returns err.
func (p *provision) refuse(ctx workflow.Context, approver, decision string, err error) error {
	step := ""
	if n := len(p.status.ApprovalsSoFar) + len(p.pending); n < len(p.status.RequiredApprovals) {
		step = p.status.RequiredApprovals[n]
	}
	keepRefusal(&p.status.Refused, &p.status.RefusedCount, Refusal{
		Time: workflow.Now(ctx), Approver: approver, Step: step, Decision: decision, Reason: err.Error(),
	})
	workflow.GetLogger(ctx).Warn("approval refused", "agent", p.in.Agent, "approver", approver, "step", step, "error", err)
	return err
}
