package workflows

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Lifecycle event types of incident runs (stream LIFECYCLE, aggregate "lifecycle" of the agent).
const (
	EventIncidentOpened   = "lifecycle.incident_opened"
	EventIncidentResolved = "lifecycle.incident_resolved"
)

// RetireTriggerAnomaly is the retirement trigger of an incident's retire decision.
const RetireTriggerAnomaly = "anomaly"

// Severity names of alerts as incident runs see them.
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// IncidentPolicy maps an alert's (severity, risk tier) to the incident's actions: the built-in
// table (DefaultIncidentActions) with per-tenant overrides. The zero value is the built-in table.
type IncidentPolicy struct {
	// Tenants overrides the table per tenant: tenant -> severity -> actions (a severity missing
	// there uses the built-in row).
	Tenants map[string]map[string][]string
	// SuspendTiers are the risk tiers whose high-severity alerts suspend (default
	// DefaultSuspendTiers).
	SuspendTiers []string
}

// DefaultSuspendTiers are the risk tiers a high-severity alert suspends: high and critical, and
// unclassified agents (fail closed: nobody has assessed them).
var DefaultSuspendTiers = []string{"high", "critical", "unclassified", ""}

// validActions are the actions a policy may name.
var validActions = []string{ActionRecord, ActionNotify, ActionSuspend}

// Validate checks the overrides: known severities and actions only.
func (p *IncidentPolicy) Validate() error {
	if p == nil {
		return nil
	}
	for tenant, rows := range p.Tenants {
		for sev, actions := range rows {
			if !slices.Contains([]string{SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}, sev) {
				return fmt.Errorf("incident policy of tenant %s: severity %q is not low, medium, high or critical", tenant, sev)
			}
			if len(actions) == 0 {
				return fmt.Errorf("incident policy of tenant %s, severity %s: no actions (use [record])", tenant, sev)
			}
			for _, a := range actions {
				if !slices.Contains(validActions, a) {
					return fmt.Errorf("incident policy of tenant %s, severity %s: action %q is not one of %v", tenant, sev, a, validActions)
				}
			}
			if sev == SeverityCritical && !slices.Contains(actions, ActionSuspend) {
				return fmt.Errorf("incident policy of tenant %s: critical alerts must suspend", tenant)
			}
		}
	}
	return nil
}

// Actions decides the actions for an alert of severity about an agent of risk tier in tenant.
// Unknown severities are treated as critical (fail closed).
func (p *IncidentPolicy) Actions(tenant, severity, tier string) []string {
	severity = strings.ToLower(severity)
	if p != nil {
		if acts, ok := p.Tenants[tenant][severity]; ok {
			return slices.Clone(acts)
		}
	}
	tiers := DefaultSuspendTiers
	if p != nil && len(p.SuspendTiers) > 0 {
		tiers = p.SuspendTiers
	}
	return DefaultIncidentActions(severity, strings.ToLower(tier), tiers)
}

// DefaultIncidentActions is the built-in table: low records only; medium notifies the owner; high
// notifies and suspends when the tier is one of suspendTiers; critical (and any unknown severity)
// suspends, revokes and notifies.
func DefaultIncidentActions(severity, tier string, suspendTiers []string) []string {
	switch severity {
	case SeverityLow:
		return []string{ActionRecord}
	case SeverityMedium:
		return []string{ActionNotify}
	case SeverityHigh:
		if slices.Contains(suspendTiers, tier) {
			return []string{ActionSuspend, ActionNotify}
		}
		return []string{ActionNotify}
	default:
		return []string{ActionSuspend, ActionNotify}
	}
}

// FallbackIncidentActions are the actions when policy cannot be evaluated: a critical alert (or one
// of unknown severity) suspends, any other notifies.
func FallbackIncidentActions(severity string) []string {
	switch strings.ToLower(severity) {
	case SeverityLow, SeverityMedium, SeverityHigh:
		return []string{ActionNotify}
	default:
		return []string{ActionSuspend, ActionNotify}
	}
}

// IncidentPolicyRequest asks which actions an alert calls for.
type IncidentPolicyRequest struct {
	// Tenant of the alert.
	Tenant string
	// Severity is low, medium, high or critical.
	Severity string
	// RiskTier is the agent's risk tier.
	RiskTier string
	// Detector is the detector that fired.
	Detector string
	// AgentKnown is false for an unknown agent (never suspended: there is nothing to suspend).
	AgentKnown bool
}

// IncidentActions are the actions policy chose.
type IncidentActions struct {
	// Actions, from ActionRecord, ActionNotify, ActionSuspend.
	Actions []string
}

// Decide is the actions for an alert: Actions for its tenant, severity and risk tier; an alert about
// an unknown agent notifies (security) and suspends nothing. The lifecycle consumer decides with it
// before it starts the incident run (IncidentInput.Actions); DecideIncidentActions for runs started
// without actions.
func (p *IncidentPolicy) Decide(in IncidentPolicyRequest) []string {
	if !in.AgentKnown {
		return []string{ActionNotify}
	}
	return p.Actions(in.Tenant, in.Severity, in.RiskTier)
}

// validIncidentActions reports whether actions is a non-empty list of known actions.
func validIncidentActions(actions []string) bool {
	if len(actions) == 0 {
		return false
	}
	for _, a := range actions {
		if !slices.Contains(validActions, a) {
			return false
		}
	}
	return true
}

// DecideIncidentActions applies the incident policy (Activities.IncidentPolicy) to an alert, for
// incident runs started without IncidentInput.Actions (by a consumer older than
// versionSuspendFirst) and runs recorded before it.
func (a *Activities) DecideIncidentActions(_ context.Context, in IncidentPolicyRequest) (IncidentActions, error) {
	return IncidentActions{Actions: a.IncidentPolicy.Decide(in)}, nil
}

// IncidentSuspendRequest asks to suspend an agent for an incident.
type IncidentSuspendRequest struct {
	// Agent is the resource name.
	Agent string
	// Reason is recorded with the suspension.
	Reason string
	// Cause is alert:<alert id>.
	Cause string
	// Ticket is the alert id.
	Ticket string
	// RequestID is the idempotency key.
	RequestID string
}

// SuspendResult says whether the agent is suspended.
type SuspendResult struct {
	// Suspended is true when the agent is SUSPENDED (now or already).
	Suspended bool
	// State is the agent's state when it could not be suspended.
	State string
	// Already is true when the agent was SUSPENDED already by another request (an operator, a review,
	// another incident): this incident did not suspend it and its restore does not resume it.
	Already bool `json:",omitempty"`
	// Cause is the cause of the agent's current suspension as the registry answered it (empty when
	// the registry did not say).
	Cause string `json:",omitempty"`
}

// maxSuspendReason bounds the reason sent to the registry (at most 1024 characters).
const maxSuspendReason = 1024

// IncidentSuspendAgent suspends the agent (RegistryService.SuspendAgent). An agent already SUSPENDED
// counts as suspended, and the result says when another request suspended it (Already) and the
// current suspension's cause; one in another state than ACTIVE (pending, retiring, retired,
// rejected) is not suspended, which the result says.
func (a *Activities) IncidentSuspendAgent(ctx context.Context, in IncidentSuspendRequest) (SuspendResult, error) {
	resp, err := a.Registry.SuspendAgent(ctx, &registryv1.SuspendAgentRequest{
		Name: in.Agent, Reason: truncate(in.Reason, maxSuspendReason), Cause: in.Cause, Ticket: in.Ticket, RequestId: in.RequestID,
	})
	if e := errs.FromStatus(err); err != nil && e.Kind == errs.KindFailedPrecondition {
		agent, gerr := a.getAgent(ctx, in.Agent)
		if gerr != nil {
			return SuspendResult{}, gerr
		}
		switch st := agent.GetState(); st {
		case registryv1.AgentState_AGENT_STATE_SUSPENDED:
			// Suspended meanwhile by someone else (a request of this run is answered, not refused).
			return SuspendResult{Suspended: true, Already: true}, nil
		case registryv1.AgentState_AGENT_STATE_ACTIVE:
			return SuspendResult{}, classify("registry.SuspendAgent", err)
		default:
			return SuspendResult{State: strings.TrimPrefix(st.String(), "AGENT_STATE_")}, nil
		}
	}
	if err != nil {
		return SuspendResult{}, classify("registry.SuspendAgent", err)
	}
	cause := resp.GetSuspensionCause()
	return SuspendResult{Suspended: true, Cause: cause, Already: cause != "" && !resp.GetSuspendedByRequest()}, nil
}

// IncidentRevokeRequest asks to revoke every token of an agent.
type IncidentRevokeRequest struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// Reason is recorded in the revocation.
	Reason string
	// RequestID is the idempotency key.
	RequestID string
}

// IncidentRevokeTokens revokes every token of the agent (IssuerService.RevokeTokens by agent), on top
// of the issuer's own reaction to the suspension.
func (a *Activities) IncidentRevokeTokens(ctx context.Context, in IncidentRevokeRequest) error {
	_, err := a.Issuer.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{
		Parent: "tenants/" + in.Tenant, Target: &issuerv1.RevokeTokensRequest_Agent{Agent: in.Agent},
		Reason: truncate(in.Reason, 512), RequestId: in.RequestID,
	})
	return classify("issuer.RevokeTokens", err)
}

// IncidentResumeRequest asks to resume a suspended agent.
type IncidentResumeRequest struct {
	// Agent is the resource name.
	Agent string
	// Reason is recorded with the resumption.
	Reason string
	// Ticket is the alert id.
	Ticket string
	// RequestID is the idempotency key.
	RequestID string
	// ExpectedCause is the cause the agent's suspension must have to be lifted: alert:<alert id>,
	// the incident's own (empty: any, as runs sent before it).
	ExpectedCause string `json:",omitempty"`
}

// IncidentResumeResult says whether the agent was resumed. The zero value (and a result recorded
// before it existed) means resumed.
type IncidentResumeResult struct {
	// NotResumed is true when the agent was left as it is: its suspension is not the incident's
	// (another cause), or it is ACTIVE already (resumed by someone else).
	NotResumed bool `json:",omitempty"`
	// Detail says why it was not resumed.
	Detail string `json:",omitempty"`
}

// IncidentResumeAgent resumes the agent (RegistryService.ResumeAgent with the expected cause): only
// the suspension the incident made is lifted. A suspension of another cause (an operator's, a
// review's, another incident's) is left in place, as is an agent someone else resumed already; the
// result says so.
func (a *Activities) IncidentResumeAgent(ctx context.Context, in IncidentResumeRequest) (IncidentResumeResult, error) {
	_, err := a.Registry.ResumeAgent(ctx, &registryv1.ResumeAgentRequest{
		Name: in.Agent, Reason: truncate(in.Reason, maxSuspendReason), Ticket: in.Ticket, RequestId: in.RequestID,
		ExpectedCause: in.ExpectedCause,
	})
	if e := errs.FromStatus(err); err != nil && e.Kind == errs.KindFailedPrecondition {
		if e.Reason == "SUSPENSION_CAUSE_MISMATCH" {
			cause := e.Metadata["cause"]
			if cause == "" {
				cause = "unknown"
			}
			return IncidentResumeResult{NotResumed: true,
				Detail: "the agent's suspension was not made by this incident (cause " + cause + "): it stays SUSPENDED"}, nil
		}
		if agent, gerr := a.getAgent(ctx, in.Agent); gerr == nil && agent.GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE {
			return IncidentResumeResult{NotResumed: true, Detail: "the agent is ACTIVE already (resumed by someone else)"}, nil
		}
	}
	if err != nil {
		return IncidentResumeResult{}, classify("registry.ResumeAgent", err)
	}
	return IncidentResumeResult{}, nil
}

// IncidentRetireRequest asks to retire an agent after an incident.
type IncidentRetireRequest struct {
	// Agent is the resource name.
	Agent string
	// Reason is recorded with the retirement.
	Reason string
	// Ticket is the alert id (the change reference).
	Ticket string
	// Trigger is RetireTriggerAnomaly.
	Trigger string
	// RequestID is the idempotency key.
	RequestID string
}

// IncidentRetireAgent retires the agent (RegistryService.RetireAgent with the trigger), which starts
// the deprovisioning run; an agent already retiring or retired counts as retired.
func (a *Activities) IncidentRetireAgent(ctx context.Context, in IncidentRetireRequest) error {
	_, err := a.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
		Name: in.Agent, Reason: truncate(in.Reason, maxSuspendReason), Ticket: in.Ticket, Trigger: in.Trigger, RequestId: in.RequestID,
	})
	if e := errs.FromStatus(err); err != nil && e.Kind == errs.KindFailedPrecondition {
		if agent, gerr := a.getAgent(ctx, in.Agent); gerr == nil {
			switch agent.GetState() {
			case registryv1.AgentState_AGENT_STATE_RETIRING, registryv1.AgentState_AGENT_STATE_RETIRED:
				return nil
			}
		}
	}
	return classify("registry.RetireAgent", err)
}

// Notification is one message of an incident run to a person or team (a webhook's JSON body).
type Notification struct {
	// ID identifies the notification; a retried delivery carries the same id (receivers de-duplicate).
	ID string `json:"id"`
	// Kind is incident.opened or incident.escalated.
	Kind string `json:"kind"`
	// Tenant of the alert.
	Tenant string `json:"tenant"`
	// Agent is the agent's resource name (or the unknown agent as seen).
	Agent string `json:"agent"`
	// AlertID, Detector, Severity and Summary describe the alert.
	AlertID  string `json:"alert_id"`
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	Summary  string `json:"summary,omitempty"`
	// RecipientRole is owner, sponsor or security.
	RecipientRole string `json:"recipient_role"`
	// Recipient is the owner or sponsor as the registry holds them (empty for security).
	Recipient string `json:"recipient,omitempty"`
	// Actions are the actions taken so far.
	Actions []string `json:"actions,omitempty"`
	// Decider is who is asked to decide now, when the run waits for a decision.
	Decider string `json:"decider,omitempty"`
	// WorkflowID and RunID name the incident run (approval tokens are bound to the run id).
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	// Time is when the run sent it (UTC).
	Time time.Time `json:"time"`
}

// Notifier delivers incident notifications (services/lifecycle/internal/notify: signed webhook).
// An error is retried by the activity's retry policy; a permanent refusal should be a
// temporal.NewNonRetryableApplicationError.
type Notifier interface {
	Notify(ctx context.Context, n Notification) error
}

// NotifyResult says whether a notification was sent.
type NotifyResult struct {
	// Delivered is true when the notifier accepted it.
	Delivered bool
	// Detail says why it was not sent (no notifier configured).
	Detail string
}

// IncidentNotify sends a notification through Activities.Notifier; without a notifier nothing is
// sent and the result says so (the run records it).
func (a *Activities) IncidentNotify(ctx context.Context, n Notification) (NotifyResult, error) {
	if a.Notifier == nil {
		return NotifyResult{Detail: "no notifier configured"}, nil
	}
	if err := a.Notifier.Notify(ctx, n); err != nil {
		return NotifyResult{}, err
	}
	return NotifyResult{Delivered: true}, nil
}

// IncidentOpenedRecord is the lifecycle.incident_opened event to record.
type IncidentOpenedRecord struct {
	// Tenant of the alert.
	Tenant string
	// Agent is the agent's resource name (or the unknown agent as seen).
	Agent string
	// AgentID is the agent id; empty for an unknown agent.
	AgentID string
	// AlertID is the alert id.
	AlertID string
	// WorkflowID is the run's id.
	WorkflowID string
	// Detector and Severity describe the alert.
	Detector, Severity string
	// Actions are what policy said to do.
	Actions []string
	// CausationID is the alert.raised event's id.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordIncidentOpened appends lifecycle.incident_opened.
func (a *Activities) RecordIncidentOpened(ctx context.Context, in IncidentOpenedRecord) error {
	return a.record(ctx, in.Tenant, incidentAggregate(in.AgentID, in.AlertID), incidentSubject(in.Tenant, in.Agent, in.AgentID, in.AlertID),
		EventIncidentOpened, in.IdempotencyKey, in.WorkflowID, in.CausationID,
		&lifecyclev1.IncidentOpened{
			Agent: in.Agent, AlertId: in.AlertID, WorkflowId: in.WorkflowID, Detector: in.Detector, Severity: in.Severity, Actions: in.Actions,
		})
}

// IncidentResolvedRecord is the lifecycle.incident_resolved event to record.
type IncidentResolvedRecord struct {
	// Tenant of the alert.
	Tenant string
	// Agent is the agent's resource name (or the unknown agent as seen).
	Agent string
	// AgentID is the agent id; empty for an unknown agent.
	AgentID string
	// AlertID is the alert id.
	AlertID string
	// WorkflowID is the run's id.
	WorkflowID string
	// Outcome is restored, retired or notified.
	Outcome string
	// DecidedBy is the decider, empty for notified.
	DecidedBy string
	// Timeline is every action with its UTC time.
	Timeline []string
	// CausationID is the alert.raised event's id.
	CausationID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
}

// RecordIncidentResolved appends lifecycle.incident_resolved.
func (a *Activities) RecordIncidentResolved(ctx context.Context, in IncidentResolvedRecord) error {
	return a.record(ctx, in.Tenant, incidentAggregate(in.AgentID, in.AlertID), incidentSubject(in.Tenant, in.Agent, in.AgentID, in.AlertID),
		EventIncidentResolved, in.IdempotencyKey, in.WorkflowID, in.CausationID,
		&lifecyclev1.IncidentResolved{
			Agent: in.Agent, AlertId: in.AlertID, WorkflowId: in.WorkflowID, Outcome: in.Outcome, DecidedBy: in.DecidedBy, Timeline: in.Timeline,
		})
}

// incidentAggregate is the lifecycle aggregate an incident's events are recorded under: the agent's,
// or the alert's own (alert-<id>) for an unknown agent.
func incidentAggregate(agentID, alertID string) string {
	if agentID != "" {
		return agentID
	}
	return "alert-" + alertID
}

// incidentSubject is the events' ce-subject: the agent, or the alert for an unknown agent.
func incidentSubject(tenant, agent, agentID, alertID string) string {
	if agentID != "" {
		return agent
	}
	return AlertName(tenant, alertID)
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
