package workflows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
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
	// Holder is who holds the provisioning step the run waits for now: the first of EscalationChain
	// until the step is escalated, then the one it was handed to last (since change
	// approval-escalation).
	Holder string `json:"holder,omitempty"`
	// EscalationChain is the line of approvers the step is handed along (EscalationChain).
	EscalationChain []string `json:"escalation_chain,omitempty"`
	// NextReminder is when the holder is reminded next, while the run waits and before the deadline.
	NextReminder time.Time `json:"next_reminder,omitzero"`
	// EscalatesAt is when the step is handed to the next approver in line, if it will be.
	EscalatesAt time.Time `json:"escalates_at,omitzero"`
	// Deadline is when the request is rejected as expired if the approvals are not all in.
	Deadline time.Time `json:"deadline,omitzero"`
	// Notices are the reminders and escalations the run sent, oldest first (the newest 50).
	Notices []Notice `json:"notices,omitempty"`
}

// Notice kinds: the Notification.Kind of a provisioning run's reminders and escalations.
const (
	// NoticeApprovalReminder reminds the holder of a step that the run waits for its decision.
	NoticeApprovalReminder = "approval.reminder"
	// NoticeApprovalEscalated tells the next approver in line that the step was handed to it.
	NoticeApprovalEscalated = "approval.escalated"
)

// Notice is one reminder or escalation a provisioning run sent, kept in the status as evidence.
type Notice struct {
	// Time is when the run sent it (UTC).
	Time time.Time `json:"time"`
	// Kind is NoticeApprovalReminder or NoticeApprovalEscalated.
	Kind string `json:"kind"`
	// Step is the approval step it is about.
	Step string `json:"step"`
	// To is the holder it went to (an entry of the step's EscalationChain).
	To string `json:"to"`
	// From is the holder the step was taken from (escalations only).
	From string `json:"from,omitempty"`
	// Delivered is true when the notifier accepted it.
	Delivered bool `json:"delivered"`
	// Detail says why it was not delivered.
	Detail string `json:"detail,omitempty"`
}

// maxNoticesKept bounds Status.Notices (the newest are kept).
const maxNoticesKept = 50

// Holders of the escalation chains: HolderOwner is the agent's owner (or its sponsor as delegate), the
// others are platform roles.
const (
	HolderOwner              = "owner"
	HolderApprover           = "approver"
	HolderSecurityApprover   = "security-approver"
	HolderComplianceApprover = "compliance-approver"
	HolderTenantAdmin        = "tenant-admin"
)

// EscalationChain is the line of approvers a provisioning step is handed along when nobody decides
// it: the step's own deciders first, then each next one after EscalateAfter without a decision.
//
//	owner:      owner -> approver -> security-approver -> tenant-admin
//	security:   security-approver -> tenant-admin
//	compliance: compliance-approver -> tenant-admin
//	approver:   approver -> security-approver -> tenant-admin
//	tenant-admin: tenant-admin (nobody above it)
//	any other:  the step's role -> tenant-admin
//
// A holder the step was handed to may decide it as the step's own deciders may; those before it in
// line keep that right.
func EscalationChain(step string) []string {
	switch step {
	case StepOwner:
		return []string{HolderOwner, HolderApprover, HolderSecurityApprover, HolderTenantAdmin}
	case StepSecurity:
		return []string{HolderSecurityApprover, HolderTenantAdmin}
	case StepCompliance:
		return []string{HolderComplianceApprover, HolderTenantAdmin}
	case HolderApprover:
		return []string{HolderApprover, HolderSecurityApprover, HolderTenantAdmin}
	case HolderTenantAdmin:
		return []string{HolderTenantAdmin}
	default:
		return []string{step, HolderTenantAdmin}
	}
}

// MayDecideEscalated lists who may decide step once it has been handed level times along its
// EscalationChain: StepRoles, the holders it was handed to, then the roles that may reject at any
// step.
func MayDecideEscalated(step string, level int) []string {
	out := StepRoles(step)
	chain := EscalationChain(step)
	for _, h := range chain[1:min(level+1, len(chain))] {
		if !slices.Contains(out, h) {
			out = append(out, h+" (escalated)")
		}
	}
	for _, r := range RejectAnyStepRoles {
		if !slices.Contains(out, r) && !slices.Contains(out, r+" (escalated)") {
			out = append(out, r+" (reject only)")
		}
	}
	return out
}

// approveEscalating is the approval stage since versionApprovalEscalation. Each step is held by the
// first of its EscalationChain; the holder is reminded every RemindEvery, and after EscalateAfter
// without a decision the step is handed to the next in line, who is notified and may decide it from
// then on (the holders before keep that right). The last in line holds it until the deadline
// (ApprovalDeadline from the start of the stage), when the request is rejected as expired.
func (p *provision) approveEscalating(ctx workflow.Context, required []string) (ProvisionResult, error) {
	deadline := workflow.Now(ctx).Add(p.in.ApprovalDeadline)
	p.status.Deadline = deadline.UTC()
	var approvers []string
	for len(p.status.ApprovalsSoFar) < len(required) {
		p.held, p.level = len(p.status.ApprovalsSoFar), 0
		step := required[p.held]
		chain := EscalationChain(step)
		if p.held > 0 && p.status.Stage == StageApprovalEscalated {
			// A new step starts with its first holder.
			if err := p.setStage(ctx, StageApproval); err != nil {
				return ProvisionResult{}, err
			}
		}
		heldSince := workflow.Now(ctx)
		lastNotice := heldSince
		for len(p.pending) == 0 {
			now := workflow.Now(ctx)
			escalateAt := heldSince.Add(p.in.EscalateAfter)
			canEscalate := p.level+1 < len(chain) && escalateAt.Before(deadline)
			remindAt := lastNotice.Add(p.in.RemindEvery)
			p.show(step, chain, remindAt, escalateAt, canEscalate, deadline)
			next := deadline
			if canEscalate && escalateAt.Before(next) {
				next = escalateAt
			}
			if remindAt.Before(next) {
				next = remindAt
			}
			got, err := workflow.AwaitWithTimeout(ctx, max(next.Sub(now), time.Millisecond), func() bool { return len(p.pending) > 0 })
			if err != nil {
				return ProvisionResult{}, err
			}
			if got {
				break
			}
			now = workflow.Now(ctx)
			switch {
			case !now.Before(deadline):
				p.clearWaiting()
				return p.reject(ctx, fmt.Sprintf("approval expired: no decision by %s (last held by %s) within %s", step, chain[p.level], p.in.ApprovalDeadline), approvers)
			case canEscalate && !now.Before(escalateAt):
				from := chain[p.level]
				p.level++
				heldSince, lastNotice = now, now
				workflow.GetLogger(ctx).Warn("approval overdue: step handed to the next approver in line",
					"agent", p.in.Agent, "step", step, "from", from, "to", chain[p.level], "waited", p.in.EscalateAfter.String())
				if p.status.Stage != StageApprovalEscalated {
					if err := p.setStage(ctx, StageApprovalEscalated); err != nil {
						return ProvisionResult{}, err
					}
				}
				p.show(step, chain, lastNotice.Add(p.in.RemindEvery), heldSince.Add(p.in.EscalateAfter), false, deadline)
				p.notifyHolder(ctx, NoticeApprovalEscalated, step, chain[p.level], from, heldSince)
			case !now.Before(remindAt):
				lastNotice = now
				p.notifyHolder(ctx, NoticeApprovalReminder, step, chain[p.level], "", heldSince)
			}
		}
		a := p.pending[0]
		p.pending = p.pending[1:]
		p.taken++
		a.Time = workflow.Now(ctx)
		p.status.ApprovalsSoFar = append(p.status.ApprovalsSoFar, a)
		if a.Decision == DecisionReject {
			p.clearWaiting()
			reason := fmt.Sprintf("rejected by %s (%s)", a.Approver, a.Role)
			if a.Comment != "" {
				reason += ": " + a.Comment
			}
			return p.reject(ctx, reason, approvers)
		}
		approvers = append(approvers, a.Approver)
	}
	p.clearWaiting()
	return p.activate(ctx, approvers)
}

// show sets what the status says about the step the run waits for.
func (p *provision) show(step string, chain []string, remindAt, escalateAt time.Time, canEscalate bool, deadline time.Time) {
	p.status.WaitingFor = "approval by " + step
	if p.level > 0 {
		p.status.WaitingFor += " (escalated to " + chain[p.level] + ")"
	}
	p.status.MayAct = MayDecideEscalated(step, p.level)
	p.status.Holder, p.status.EscalationChain = chain[p.level], slices.Clone(chain)
	p.status.NextReminder, p.status.EscalatesAt = time.Time{}, time.Time{}
	if remindAt.Before(deadline) {
		p.status.NextReminder = remindAt.UTC()
	}
	if canEscalate || (p.level+1 < len(chain) && escalateAt.Before(deadline)) {
		p.status.EscalatesAt = escalateAt.UTC()
	}
}

// clearWaiting clears what the status says about a waiting step.
func (p *provision) clearWaiting() {
	p.status.WaitingFor, p.status.MayAct, p.status.Holder, p.status.EscalationChain = "", nil, "", nil
	p.status.NextReminder, p.status.EscalatesAt = time.Time{}, time.Time{}
}

// notifyHolder sends a reminder or escalation notice to holder (activity NotifyApprover) and keeps
// it in the status; a notice that cannot be delivered after its retries is recorded, never fatal.
func (p *provision) notifyHolder(ctx workflow.Context, kind, step, holder, from string, heldSince time.Time) {
	p.notices++
	now := workflow.Now(ctx).UTC()
	summary := fmt.Sprintf("the provisioning of %s waits for the %s approval, held by %s since %s", p.in.Agent, step, holder, heldSince.UTC().Format(time.RFC3339))
	if kind == NoticeApprovalEscalated {
		summary = fmt.Sprintf("the %s approval of %s was handed from %s to %s: nobody decided it within %s", step, p.in.Agent, from, holder, p.in.EscalateAfter)
	}
	var res NotifyResult
	nctx := workflow.WithActivityOptions(ctx, notifyOptions)
	err := workflow.ExecuteActivity(nctx, acts.NotifyApprover, Notification{
		ID: requestID(p.id, fmt.Sprintf("notice-%d", p.notices)), Kind: kind, Tenant: p.in.Tenant, Agent: p.in.Agent,
		Summary: summary, RecipientRole: holder, Decider: step, WorkflowID: p.id,
		RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID, Time: now,
	}).Get(ctx, &res)
	n := Notice{Time: now, Kind: kind, Step: step, To: holder, From: from, Delivered: err == nil && res.Delivered, Detail: res.Detail}
	if err != nil {
		n.Detail = errorMessage(err)
		workflow.GetLogger(ctx).Error("cannot notify the approver in line", "agent", p.in.Agent, "kind", kind, "to", holder, "error", err)
	}
	p.status.Notices = append(p.status.Notices, n)
	if len(p.status.Notices) > maxNoticesKept {
		p.status.Notices = slices.Clone(p.status.Notices[len(p.status.Notices)-maxNoticesKept:])
	}
}

// escalatedTo lists the holders the step at index next was handed to (none unless it is the step
// the run waits for and has been escalated).
func (p *provision) escalatedTo(step string, next int) []string {
	if !p.escalating || next != p.held || p.level == 0 {
		return nil
	}
	chain := EscalationChain(step)
	return chain[1:min(p.level+1, len(chain))]
}

// decidingRole is the role in which v's subject decides step (stepRole), or one of the holders the
// step was handed to.
func (p *provision) decidingRole(step string, next int, v VerifiedApproval) (string, error) {
	role, err := stepRole(step, v)
	if err == nil {
		return role, nil
	}
	handed := p.escalatedTo(step, next)
	for _, h := range handed {
		if slices.Contains(v.Roles, h) {
			return h, nil
		}
	}
	if len(handed) > 0 {
		return "", fmt.Errorf("%w: the %s step, escalated to %s, is decided by %v; %s holds %v", ErrApprovalRefused, step, handed[len(handed)-1], MayDecideEscalated(step, p.level), v.Subject, v.Roles)
	}
	return "", err
}

// NotifyApprover sends a provisioning run's reminder or escalation notice through
// Activities.Notifier (the webhook of the incident notifications); for the owner it names the agent's
// owner as the registry holds it. Without a notifier nothing is sent and the result says so.
func (a *Activities) NotifyApprover(ctx context.Context, n Notification) (NotifyResult, error) {
	if a.Notifier == nil {
		return NotifyResult{Detail: "no notifier configured"}, nil
	}
	if n.RecipientRole == HolderOwner && n.Recipient == "" && a.Registry != nil {
		if resp, err := a.Registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: n.Agent}); err == nil {
			n.Recipient = resp.GetAgent().GetOwner()
		}
	}
	if err := a.Notifier.Notify(ctx, n); err != nil {
		return NotifyResult{}, err
	}
	return NotifyResult{Delivered: true}, nil
}
