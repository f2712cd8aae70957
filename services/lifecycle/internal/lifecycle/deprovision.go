package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/workflows"
)

// DeprovisionPolicy configures the deprovisioning runs the service starts.
type DeprovisionPolicy struct {
	// SignOffSteps are the sign-offs a run waits for after verification, in order (default
	// workflows.DefaultSignOffSteps: owner, then security).
	SignOffSteps []string
	// NoSignOffTriggers are the triggers whose runs end without sign-offs (default
	// DefaultNoSignOffTriggers: ttl and task_completed, the teardown of ephemeral agents). Set it to an empty, non-nil
	// slice to require sign-offs for every trigger.
	NoSignOffTriggers []string
	// RemindEvery is how often a waiting sign-off is reminded (default
	// workflows.DefaultSignOffRemindEvery).
	RemindEvery time.Duration
	// EscalateAfter is how long a sign-off may wait before reminders also go to security (default
	// workflows.DefaultSignOffEscalateAfter).
	EscalateAfter time.Duration
}

// DefaultNoSignOffTriggers are the triggers whose runs need no sign-off unless configured otherwise:
// an ephemeral agent's expiry, or the completion its task reported, is the plan its owner registered
// it with.
var DefaultNoSignOffTriggers = []string{workflows.TriggerTTL, workflows.TriggerTaskCompleted}

// Validate checks the policy.
func (p DeprovisionPolicy) Validate() error {
	for _, s := range p.SignOffSteps {
		if s != workflows.StepOwner && s != workflows.StepSecurity {
			return errs.InvalidArgument("deprovision_sign_off_steps", fmt.Sprintf("sign-off step %q is neither owner nor security", s))
		}
	}
	for _, t := range p.NoSignOffTriggers {
		if !slices.Contains(workflows.Triggers, t) {
			return errs.InvalidArgument("deprovision_no_sign_off_triggers", fmt.Sprintf("trigger %q is not one of %v", t, workflows.Triggers))
		}
	}
	if p.RemindEvery < 0 || p.EscalateAfter < 0 {
		return errs.InvalidArgument("deprovision_remind_every", "sign-off reminder durations must not be negative")
	}
	return nil
}

// apply fills a deprovisioning run's sign-off settings from the policy.
func (p DeprovisionPolicy) apply(in workflows.DeprovisionInput) workflows.DeprovisionInput {
	trigger := in.Trigger
	if trigger == "" {
		trigger = workflows.TriggerRequest
	}
	noSignOff := p.NoSignOffTriggers
	if noSignOff == nil {
		noSignOff = DefaultNoSignOffTriggers
	}
	in.NoSignOff = slices.Contains(noSignOff, trigger)
	in.SignOffSteps = slices.Clone(p.SignOffSteps)
	in.RemindEvery, in.EscalateAfter = p.RemindEvery, p.EscalateAfter
	return in
}

// SignOff is one sign-off of a verified deprovisioning submitted through the API.
type SignOff struct {
	// Agent is the resource name.
	Agent string
	// Comment is recorded with the sign-off.
	Comment string
	// Token is the caller's SIGN_OFF approval token for the run and its current step. Required.
	Token string
	// RequestID identifies the submission; a repeat with the same id is answered like the first.
	RequestID string
}

// SignOffDeprovisioning records p's sign-off on the agent's deprovisioning run and returns the run
// after it. A run that is not waiting for a sign-off, or a sign-off the run refuses (a bad token, a
// token for another step, run or decision, a caller who may not sign the step) is FailedPrecondition
// (APPROVAL_REFUSED or NOT_WAITING_FOR_SIGN_OFF) and changes nothing.
func (s *Service) SignOffDeprovisioning(ctx context.Context, p *authn.Principal, so SignOff) (Run, error) {
	tenant, agentID, err := ParseAgent("agent", so.Agent)
	if err != nil {
		return Run{}, err
	}
	updateID, err := callerUpdateID(p, so.RequestID)
	if err != nil {
		return Run{}, err
	}
	if so.Token == "" {
		return Run{}, errs.InvalidArgument("approval_token", "is required: get a SIGN_OFF approval token with IssuerService.IssueApprovalToken")
	}
	// An owner who has left signs nothing off (as no other lifecycle decision of theirs counts).
	if err := checkDecider(ctx, s.registry, p, so.Agent); err != nil {
		return Run{}, err
	}
	id := workflows.DeprovisionWorkflowID(tenant, agentID)
	err = updateRun(ctx, s.temporal, updateID, id, workflows.SignOffUpdate,
		workflows.Approval{Approver: p.ID, Decision: workflows.DecisionSignOff, Comment: so.Comment, Token: so.Token, SubmittedBy: p.ID}, nil)
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
	case workflows.IsApprovalRefused(err):
		return Run{}, errs.FailedPrecondition("APPROVAL_REFUSED", approvalMessage(err))
	case errors.As(err, &nf):
		return Run{}, errs.FailedPrecondition("NOT_WAITING_FOR_SIGN_OFF", "the agent has no deprovisioning run waiting for a sign-off")
	default:
		return Run{}, temporalError("sign off deprovisioning", err)
	}
	r, _, err := s.describe(ctx, KindDeprovision, id)
	return r, err
}
