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
	switch {
	case a.Token == "":
		return fmt.Errorf("%w: no approval token: an approval counts only with a token from the issuer (agentctl approvals token), sent as {\"token\":\"...\"}", ErrApprovalRefused)
	case len(a.Token) > maxApprovalTokenLen:
		return fmt.Errorf("%w: the approval token is larger than %d bytes", ErrApprovalRefused, maxApprovalTokenLen)
	case a.Decision != "" && a.Decision != DecisionApprove && a.Decision != DecisionReject:
		return fmt.Errorf("%w: decision %q is neither %q nor %q", ErrApprovalRefused, a.Decision, DecisionApprove, DecisionReject)
	}
	return nil
}

// verify checks a's approval token with VerifyApproval and the run's rules, and returns the approval
// as it counts: approver, role, decision and step from the verified token. A refused approval is
// recorded in the status (refuse) and returned as an ErrApprovalRefused error saying why.
func (p *provision) verify(ctx workflow.Context, a Approval) (Approval, error) {
	if err := p.precheck(a); err != nil {
		return Approval{}, p.refuse(ctx, "", a.Decision, err)
	}
	// One approval at a time, in the order they arrived: each is judged against the steps the ones
	// before it covered.
	if err := workflow.Await(ctx, func() bool { return !p.verifying }); err != nil {
		return Approval{}, err
	}
	p.verifying = true
	defer func() { p.verifying = false }()
	var v VerifiedApproval
	vctx := workflow.WithActivityOptions(ctx, verifyApprovalOptions)
	if err := workflow.ExecuteActivity(vctx, acts.VerifyApproval, VerifyApprovalRequest{Agent: p.in.Agent, Token: a.Token}).Get(ctx, &v); err != nil {
		return Approval{}, p.refuse(ctx, "", a.Decision, fmt.Errorf("%w: the approval token could not be verified: %s", ErrApprovalRefused, errorMessage(err)))
	}
	if v.Refused != "" {
		return Approval{}, p.refuse(ctx, "", a.Decision, fmt.Errorf("%w: %s", ErrApprovalRefused, v.Refused))
	}
	taken, err := p.judge(ctx, a, v)
	if err != nil {
		return Approval{}, p.refuse(ctx, v.Subject, v.Decision, err)
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
	run := workflow.GetInfo(ctx).WorkflowExecution.RunID
	switch {
	case v.Agent != p.in.Agent:
		return refused("the approval token is for agent %s, not %s", v.Agent, p.in.Agent)
	case v.Run != run:
		return refused("the approval token is for run %s, not this run (%s)", v.Run, run)
	case p.usedTokens[v.TokenID]:
		return refused("the approval token %s has been used already: each token counts once", v.TokenID)
	}
	if p.usedTokens == nil {
		p.usedTokens = map[string]bool{}
	}
	p.usedTokens[v.TokenID] = true
	switch {
	case a.SubmittedBy != "" && a.SubmittedBy != v.Subject:
		return refused("the approval token was issued to %s, not to the caller %s", v.Subject, a.SubmittedBy)
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
		switch {
		case v.Owner != "" && v.Subject == v.Owner:
			return "owner", nil
		case v.Sponsor != "" && v.Subject == v.Sponsor:
			return "owner-delegate", nil
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
	p.status.RefusedCount++
	p.status.Refused = append(p.status.Refused, Refusal{
		Time: workflow.Now(ctx), Approver: approver, Step: step, Decision: decision, Reason: err.Error(),
	})
	if len(p.status.Refused) > maxRefusalsKept {
		p.status.Refused = slices.Clone(p.status.Refused[len(p.status.Refused)-maxRefusalsKept:])
	}
	workflow.GetLogger(ctx).Warn("approval refused", "agent", p.in.Agent, "approver", approver, "step", step, "error", err)
	return err
}
