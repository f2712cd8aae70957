package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Approval decisions.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
)

// AnyStepRoles are the platform roles that may decide any approval step, whatever role the policy asked
// for (the callers of LifecycleService.SubmitApproval). Other roles decide only the step that names them.
var AnyStepRoles = []string{"approver", "tenant-admin", "platform-admin"}

// Approval is one approver's decision, sent as signal "approval" (JSON, e.g. from the Temporal UI:
// {"approver":"alice@corp","role":"owner","decision":"approve","comment":"ok"}) or update "approve".
type Approval struct {
	// Approver identifies who decided (a principal id).
	Approver string `json:"approver"`
	// Role is the role the approver acts in: the step's role or one of AnyStepRoles.
	Role string `json:"role"`
	// Decision is approve or reject.
	Decision string `json:"decision"`
	// Comment is free text, recorded.
	Comment string `json:"comment,omitempty"`
	// Time is when the run took the approval (set by the workflow).
	Time time.Time `json:"time,omitzero"`
}

// ErrApprovalRefused marks an approval the run cannot take; the update validator returns it wrapped.
var ErrApprovalRefused = errors.New("approval refused")

// normalize trims the approval's fields and lower-cases role and decision.
func (a Approval) normalize() Approval {
	a.Approver = strings.TrimSpace(a.Approver)
	a.Role = strings.ToLower(strings.TrimSpace(a.Role))
	a.Decision = strings.ToLower(strings.TrimSpace(a.Decision))
	a.Comment = strings.TrimSpace(a.Comment)
	return a
}

// check says whether a can decide the step that waits for role step.
func (a Approval) check(step string) error {
	switch {
	case a.Approver == "":
		return fmt.Errorf("%w: approver is required", ErrApprovalRefused)
	case a.Decision != DecisionApprove && a.Decision != DecisionReject:
		return fmt.Errorf("%w: decision %q is neither %q nor %q", ErrApprovalRefused, a.Decision, DecisionApprove, DecisionReject)
	case a.Role == "":
		return fmt.Errorf("%w: role is required", ErrApprovalRefused)
	case a.Role != step && !slices.Contains(AnyStepRoles, a.Role):
		return fmt.Errorf("%w: the run waits for approval by %s, not %s", ErrApprovalRefused, step, a.Role)
	}
	return nil
}

// MayDecide lists the roles that may decide a step waiting for role step.
func MayDecide(step string) []string {
	if slices.Contains(AnyStepRoles, step) {
		return slices.Clone(AnyStepRoles)
	}
	return append([]string{step}, AnyStepRoles...)
}

// Status is the answer of query "status" and update "approve".
type Status struct {
	// Stage is the current stage.
	Stage string `json:"stage"`
	// WaitingFor says what the run waits for, e.g. "approval by owner"; empty when it is not waiting.
	WaitingFor string `json:"waiting_for,omitempty"`
	// MayAct lists the roles that may decide the step the run waits for.
	MayAct []string `json:"may_act,omitempty"`
	// RequiredApprovals are the approver roles the policy asked for, in order.
	RequiredApprovals []string `json:"required_approvals,omitempty"`
	// ApprovalsSoFar are the approvals taken, in order.
	ApprovalsSoFar []Approval `json:"approvals_so_far,omitempty"`
	// DecisionID is the policy decision's id, once decided.
	DecisionID string `json:"decision_id,omitempty"`
	// Result is the outcome once the run is done (activated, rejected, retired).
	Result string `json:"result,omitempty"`
	// Reason explains a rejection or failure.
	Reason string `json:"reason,omitempty"`
}
