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

// AnyStepRoles are the platform roles that could decide any approval step in runs recorded before
// approval tokens (versionApprovalToken); runs since then take the step roles of StepRoles.
var AnyStepRoles = []string{"approver", "tenant-admin", "platform-admin"}

// Approval steps with roles of their own; any other step is decided by the role of its name or by
// approver.
const (
	// StepOwner is decided by the agent's owner, or its sponsor as the owner's named delegate.
	StepOwner = "owner"
	// StepSecurity is decided by security-approver.
	StepSecurity = "security"
	// StepCompliance is decided by compliance-approver.
	StepCompliance = "compliance"
)

// RejectAnyStepRoles may reject (never approve) at any step: a rejection only ever stops access.
var RejectAnyStepRoles = []string{"approver", "tenant-admin"}

// Approval is one approver's decision, sent as signal "approval" (JSON, e.g. from the Temporal UI:
// {"token":"<approval token>","comment":"ok"}) or update "approve". Since versionApprovalToken the
// decision counts only with a valid approval token (IssuerService.IssueApprovalToken): approver,
// role, decision and step are taken from the verified token, never from the JSON.
type Approval struct {
	// Approver identifies who decided: the approval token's subject (a person).
	Approver string `json:"approver"`
	// Role is the role the approver acted in (set by the run from the token and the agent).
	Role string `json:"role"`
	// Decision is approve or reject; when sent with a token it must match the token's decision.
	Decision string `json:"decision"`
	// Comment is free text, recorded.
	Comment string `json:"comment,omitempty"`
	// Time is when the run took the approval (set by the workflow).
	Time time.Time `json:"time,omitzero"`
	// Token is the approver's approval token; required since versionApprovalToken, never shown in
	// the status.
	Token string `json:"token,omitempty"`
	// SubmittedBy is the authenticated caller that relayed the approval (the lifecycle service sets
	// it); when set it must be the token's subject.
	SubmittedBy string `json:"submitted_by,omitempty"`
	// Step is the step the approval decided (set by the workflow).
	Step string `json:"step,omitempty"`
	// TokenID is the approval token's jti (set by the workflow).
	TokenID string `json:"token_id,omitempty"`
}

// Refusal is an approval the run refused, kept in the status as evidence.
type Refusal struct {
	// Time is when the run refused it.
	Time time.Time `json:"time"`
	// Approver is the verified token's subject, or empty when the token did not verify.
	Approver string `json:"approver,omitempty"`
	// Step is the step the run waited for.
	Step string `json:"step,omitempty"`
	// Decision is the decision asked for, if known.
	Decision string `json:"decision,omitempty"`
	// Reason says why the approval was refused.
	Reason string `json:"reason"`
}

// maxRefusalsKept bounds Status.Refused (the newest are kept; Status.RefusedCount counts all).
const maxRefusalsKept = 20

// ErrApprovalRefused marks an approval the run cannot take; the update validator returns it wrapped.
var ErrApprovalRefused = errors.New("approval refused")

// normalize trims the approval's fields and lower-cases role and decision.
func (a Approval) normalize() Approval {
	a.Approver = strings.TrimSpace(a.Approver)
	a.Role = strings.ToLower(strings.TrimSpace(a.Role))
	a.Decision = strings.ToLower(strings.TrimSpace(a.Decision))
	a.Comment = strings.TrimSpace(a.Comment)
	a.Token = strings.TrimSpace(a.Token)
	a.Step, a.TokenID = "", ""
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

// MayDecide lists the roles that may decide a step waiting for role step (StepRoles, then the roles
// that may reject at any step).
func MayDecide(step string) []string {
	out := StepRoles(step)
	for _, r := range RejectAnyStepRoles {
		if !slices.Contains(out, r) {
			out = append(out, r+" (reject only)")
		}
	}
	return out
}

// StepRoles lists who may approve a step: the owner step its owner (or the owner's delegate), the
// security and compliance steps their approver roles, any other step the role of its name or approver.
func StepRoles(step string) []string {
	switch step {
	case StepOwner:
		return []string{"the agent's owner", "the agent's sponsor (the owner's delegate)"}
	case StepSecurity:
		return []string{"security-approver"}
	case StepCompliance:
		return []string{"compliance-approver"}
	case "approver":
		return []string{"approver"}
	default:
		return []string{step, "approver"}
	}
}

// Status is the answer of query "status" and update "approve".
type Status struct {
	// Stage is the current stage.
	Stage string `json:"stage"`
	// WaitingFor says what the run waits for, e.g. "approval by owner"; empty when it is not waiting.
	WaitingFor string `json:"waiting_for,omitempty"`
	// MayAct lists the roles that may decide the step the run waits for.
	MayAct []string `json:"may_act,omitempty"`
	// Step is the sign-off step a deprovisioning run waits for (e.g. "owner"), the step an approval
	// token for it must name; empty otherwise (a provisioning run's step follows from
	// RequiredApprovals and ApprovalsSoFar).
	Step string `json:"step,omitempty"`
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
	// Refused are the newest approvals the run refused, with why (at most 20).
	Refused []Refusal `json:"refused,omitempty"`
	// RefusedCount counts every approval the run refused.
	RefusedCount int `json:"refused_count,omitempty"`
}
