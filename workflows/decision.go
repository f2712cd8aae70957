package workflows

import (
	"fmt"
	"slices"

	"go.temporal.io/sdk/workflow"
)

// tokenGate is what every run decided with approval tokens keeps about them (provisioning approvals,
// deprovisioning sign-offs, incident and review decisions): whether a token is being verified and
// judged now, and the ids of the tokens presented to the run.
type tokenGate struct {
	usedTokens map[string]bool // approval token ids presented to this run
	verifying  bool            // an approval token is being verified and judged
}

// tokenDecision is one decision a run takes with an approval token, as tokenGate.decide handles it.
type tokenDecision struct {
	// Agent is the run's agent, the one the token must be for.
	Agent string
	// Token is the approval token presented.
	Token string
	// Decision is the decision the request names ("" when it names none), recorded with refusals
	// that come before the token is verified.
	Decision string
	// Precheck refuses what cannot count without verifying anything.
	Precheck func() error
	// PrecheckAgain runs Precheck again once the run's earlier verification has ended.
	PrecheckAgain bool
	// Judge applies the run's rules to the verified token and, when it counts, takes it.
	Judge func(VerifiedApproval) error
	// Refuse records a refusal (the approver once the token verified, the decision) and returns err.
	Refuse func(approver, decision string, err error) error
}

// decide handles one token decision: Precheck, then (one verification at a time, in the order they
// arrived) activity VerifyApproval and Judge. Every refusal goes through d.Refuse; an error of the
// wait itself (the run is ending) is returned as it is.
func (g *tokenGate) decide(ctx workflow.Context, d tokenDecision) error {
	if err := d.Precheck(); err != nil {
		return d.Refuse("", d.Decision, err)
	}
	// One token at a time, in the order they arrived: each is judged against what the ones before it
	// decided.
	if err := workflow.Await(ctx, func() bool { return !g.verifying }); err != nil {
		return err
	}
	if d.PrecheckAgain {
		if err := d.Precheck(); err != nil {
			return d.Refuse("", d.Decision, err)
		}
	}
	g.verifying = true
	defer func() { g.verifying = false }()
	var v VerifiedApproval
	vctx := workflow.WithActivityOptions(ctx, verifyApprovalOptions)
	if err := workflow.ExecuteActivity(vctx, acts.VerifyApproval, VerifyApprovalRequest{Agent: d.Agent, Token: d.Token}).Get(ctx, &v); err != nil {
		return d.Refuse("", d.Decision, fmt.Errorf("%w: the approval token could not be verified: %s", ErrApprovalRefused, errorMessage(err)))
	}
	if v.Refused != "" {
		return d.Refuse("", d.Decision, fmt.Errorf("%w: %s", ErrApprovalRefused, v.Refused))
	}
	if err := d.Judge(v); err != nil {
		return d.Refuse(v.Subject, v.Decision, err)
	}
	return nil
}

// bind refuses a verified token that is for another agent or another run (runName says which run
// this is, e.g. "this incident run") or that has been presented before, and records it as presented.
func (g *tokenGate) bind(ctx workflow.Context, agent, runName string, v VerifiedApproval) error {
	run := workflow.GetInfo(ctx).WorkflowExecution.RunID
	switch {
	case v.Agent != agent:
		return refusedf("the approval token is for agent %s, not %s", v.Agent, agent)
	case v.Run != run:
		return refusedf("the approval token is for run %s, not %s (%s)", v.Run, runName, run)
	case g.usedTokens[v.TokenID]:
		return refusedf("the approval token %s has been used already: each token counts once", v.TokenID)
	}
	if g.usedTokens == nil {
		g.usedTokens = map[string]bool{}
	}
	g.usedTokens[v.TokenID] = true
	return nil
}

// refusedf is an ErrApprovalRefused error saying why.
func refusedf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrApprovalRefused}, args...)...)
}

// callerRefusal refuses a token submitted by someone (submittedBy, "" for a signal) other than the
// person it was issued to.
func callerRefusal(submittedBy string, v VerifiedApproval) error {
	if submittedBy != "" && submittedBy != v.Subject {
		return refusedf("the approval token was issued to %s, not to the caller %s", v.Subject, submittedBy)
	}
	return nil
}

// tokenRefusal refuses, before verifying it, a missing token (missing says what counts instead) or
// one larger than maxApprovalTokenLen.
func tokenRefusal(token, missing string) error {
	switch {
	case token == "":
		return refusedf("no approval token: %s", missing)
	case len(token) > maxApprovalTokenLen:
		return refusedf("the approval token is larger than %d bytes", maxApprovalTokenLen)
	}
	return nil
}

// decisionRefusal refuses a requested decision that is neither "" nor one of the two the run takes.
func decisionRefusal(decision, one, other string) error {
	if decision != "" && decision != one && decision != other {
		return refusedf("decision %q is neither %q nor %q", decision, one, other)
	}
	return nil
}

// ownerRole is the role in which v's subject decides an owner step: "owner" for the agent's owner,
// "owner-delegate" for its sponsor, "" for anyone else.
func ownerRole(v VerifiedApproval) string {
	switch {
	case v.Owner != "" && v.Subject == v.Owner:
		return "owner"
	case v.Sponsor != "" && v.Subject == v.Sponsor:
		return "owner-delegate"
	}
	return ""
}

// keepRefusal counts a refusal in *count and appends it to *refused, keeping the newest
// maxRefusalsKept.
func keepRefusal(refused *[]Refusal, count *int, r Refusal) {
	*count++
	*refused = append(*refused, r)
	if len(*refused) > maxRefusalsKept {
		*refused = slices.Clone((*refused)[len(*refused)-maxRefusalsKept:])
	}
}
