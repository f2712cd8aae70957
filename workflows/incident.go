package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Temporal names of incident runs.
const (
	// IncidentWorkflowName is the registered name of IncidentWorkflow.
	IncidentWorkflowName = "IncidentWorkflow"
	// DecideUpdate carries an IncidentDecision and answers with the run's IncidentStatus once the
	// decision has been carried out; its validator and handler refuse decisions the run cannot take.
	DecideUpdate = "decide"
)

// Stages of incident runs (Stage search attribute and status query).
const (
	StageIncidentPolicy  = "policy"
	StageIncidentSuspend = "suspend"
	StageIncidentNotify  = "notify"
	StageIncidentDecide  = "decide"
	StageIncidentRestore = "restore"
	StageIncidentRetire  = "retire"
)

// Decisions that end an incident (approval token decisions restore and retire).
const (
	DecisionRestore = "restore"
	DecisionRetire  = "retire"
)

// Incident deciders, in escalation order: the approval token's step.
const (
	StepSponsor = "sponsor"
	// StepOwner and StepSecurity (approval.go) are the first and the last decider.
)

// Outcomes of incident runs (IncidentResolved.outcome).
const (
	OutcomeRestored = "restored"
	OutcomeRetired  = "retired"
	OutcomeNotified = "notified"
)

// Incident actions as policy names them (IncidentOpened.actions).
const (
	// ActionRecord only records the incident.
	ActionRecord = "record"
	// ActionNotify notifies the owner (security for an unknown agent).
	ActionNotify = "notify"
	// ActionSuspend suspends the agent and revokes its tokens, then waits for a decision.
	ActionSuspend = "suspend"
)

// Default escalation durations of incident runs (per tenant in the lifecycle service's configuration).
const (
	DefaultIncidentOwnerFor   = 4 * time.Hour
	DefaultIncidentSponsorFor = 4 * time.Hour
	// DefaultIncidentSecurityRemindEvery is how often security is reminded of an incident that waits
	// for its decision (since versionIncidentSecurityReminders).
	DefaultIncidentSecurityRemindEvery = 24 * time.Hour
	// MinIncidentSecurityRemindEvery is the shortest reminder interval: a shorter one is raised to it.
	MinIncidentSecurityRemindEvery = time.Hour
	// IncidentRemindersAtFullRate is how many reminders are sent every SecurityRemindEvery; after them
	// an incident still waiting is reminded at most daily, so a run's history stays small.
	IncidentRemindersAtFullRate = 48
)

// NotificationIncidentReminder is the kind of the reminders to security of an incident that waits for
// its decision.
const NotificationIncidentReminder = "incident.reminder"

// IncidentWorkflowID is the deterministic id of the incident run of one alert.
func IncidentWorkflowID(tenant, alertID string) string { return "incident/" + tenant + "/" + alertID }

// AlertName is the resource name of an alert: tenants/{tenant}/alerts/{alert}.
func AlertName(tenant, alertID string) string { return "tenants/" + tenant + "/alerts/" + alertID }

// IncidentInput starts IncidentWorkflow for one alert.
type IncidentInput struct {
	// Tenant of the alert.
	Tenant string
	// AlertID is the alert's id (a UUID).
	AlertID string
	// Agent is the agent's resource name; for an unknown agent the name or client id as seen.
	Agent string
	// AgentID is the agent id (empty for an unknown agent).
	AgentID string
	// AgentKnown is false for an alert about an agent the registry does not know: nothing to suspend.
	AgentKnown bool
	// Detector is the detector that fired.
	Detector string
	// Severity is low, medium, high or critical.
	Severity string
	// RiskTier is the agent's risk tier at detection time (low, moderate, high, critical, unclassified).
	RiskTier string
	// Summary is the alert's one-line summary.
	Summary string
	// Owner and Sponsor are the agent's owner and sponsor at detection time.
	Owner, Sponsor string
	// EventID is the id of the alert.raised event, recorded as causation.
	EventID string
	// OwnerFor is how long the owner may take before the run escalates to the sponsor (default
	// DefaultIncidentOwnerFor).
	OwnerFor time.Duration
	// SponsorFor is how long the sponsor may take before the run escalates to security (default
	// DefaultIncidentSponsorFor).
	SponsorFor time.Duration
	// SecurityRemindEvery is how often security is reminded while the run waits for its decision
	// (default DefaultIncidentSecurityRemindEvery, at least MinIncidentSecurityRemindEvery, at most
	// daily after IncidentRemindersAtFullRate reminders).
	SecurityRemindEvery time.Duration `json:",omitempty"`
	// Actions are the incident policy's actions for the alert (IncidentPolicy.Decide), decided by the
	// lifecycle consumer before it starts the run so that the run's first step is the suspension.
	// Empty (a run started by an older consumer): the run asks DecideIncidentActions. Actions the
	// run does not know count as a policy that could not be evaluated (FallbackIncidentActions).
	Actions []string `json:",omitempty"`
}

func (in IncidentInput) validate() error {
	bad := func(format string, args ...any) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), "INVALID_ARGUMENT", nil)
	}
	switch {
	case in.Tenant == "":
		return bad("tenant is required")
	case in.AlertID == "" || strings.ContainsAny(in.AlertID, "/ "):
		return bad("alert id %q is empty or contains a slash or space", in.AlertID)
	case in.Agent == "":
		return bad("agent is required")
	}
	if in.AgentKnown {
		return validateAgent(in.Tenant, in.Agent, in.AgentID)
	}
	return nil
}

// IncidentDecision decides an incident, sent as update "decide" ({"token":"...","comment":"..."}).
// Decider, step and decision are taken from the verified approval token, never from the JSON.
type IncidentDecision struct {
	// Token is the decider's approval token (decision restore or retire, step = the current decider).
	Token string `json:"token"`
	// Decision is restore or retire; when set it must match the token's decision.
	Decision string `json:"decision,omitempty"`
	// Comment is free text, recorded.
	Comment string `json:"comment,omitempty"`
	// SubmittedBy is the authenticated caller that relayed the decision (set by the lifecycle
	// service); when set it must be the token's subject.
	SubmittedBy string `json:"submitted_by,omitempty"`
}

// TakenDecision is the decision a run took.
type TakenDecision struct {
	// Decider is the approval token's subject.
	Decider string `json:"decider"`
	// Role is the role the decider acted in (owner, owner-delegate, sponsor, security-approver ...).
	Role string `json:"role"`
	// Step is the step the run waited for.
	Step string `json:"step"`
	// Decision is restore or retire.
	Decision string `json:"decision"`
	// Comment is the decider's comment.
	Comment string `json:"comment,omitempty"`
	// TokenID is the approval token's jti.
	TokenID string `json:"token_id"`
	// Time is when the run took it.
	Time time.Time `json:"time"`
}

// IncidentStatus is the answer of query "status" and update "decide" of an incident run.
type IncidentStatus struct {
	// Stage is the current stage.
	Stage string `json:"stage"`
	// Agent is the agent's resource name (or the unknown agent as seen).
	Agent string `json:"agent"`
	// AlertID, Detector, Severity describe the alert.
	AlertID  string `json:"alert_id"`
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Actions are what policy said to do (record, notify, suspend).
	Actions []string `json:"actions,omitempty"`
	// Taken are the actions taken so far, in order (notified owner, suspended, tokens revoked, escalated to sponsor ...).
	Taken []string `json:"taken,omitempty"`
	// Timeline is every action and escalation with its UTC time ("2026-11-30T03:00:01Z suspended").
	Timeline []string `json:"timeline,omitempty"`
	// Decider is who is asked to decide now (owner, sponsor, security) while the run waits.
	Decider string `json:"decider,omitempty"`
	// WaitingFor says what the run waits for, if anything.
	WaitingFor string `json:"waiting_for,omitempty"`
	// MayAct lists who may decide the current step.
	MayAct []string `json:"may_act,omitempty"`
	// Decision is the decision taken, once there is one.
	Decision *TakenDecision `json:"decision,omitempty"`
	// Outcome is restored, retired or notified once the run is done.
	Outcome string `json:"outcome,omitempty"`
	// Reason explains a failure.
	Reason string `json:"reason,omitempty"`
	// Refused are the newest decisions the run refused, with why (at most 20).
	Refused []Refusal `json:"refused,omitempty"`
	// RefusedCount counts every decision the run refused.
	RefusedCount int `json:"refused_count,omitempty"`
	// Reminders counts the reminders sent to security while the run waits for its decision (they
	// are counted here, and summed up in one timeline line once decided, not recorded one by one).
	Reminders int `json:"reminders,omitempty"`
	// LastReminder is when the last reminder was sent.
	LastReminder *time.Time `json:"last_reminder,omitempty"`
}

// IncidentResult is how an incident run ended.
type IncidentResult struct {
	// Result is the outcome (restored, retired, notified), as the lifecycle service shows it.
	Result string
	// DecidedBy is the decider, empty for notified.
	DecidedBy string
	// Timeline is every action with its UTC time.
	Timeline []string
	// Taken are the actions taken, in order.
	Taken []string `json:",omitempty"`
}

// incidentOptions are the activity options of the incident's actions: suspension and revocation are
// retried for as long as the run lives (a retry can only help).
var incidentOptions = activityOptions

// notifyOptions bound one notification: retried with backoff for an hour, then recorded as failed.
var notifyOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    30 * time.Second,
	ScheduleToCloseTimeout: time.Hour,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    5 * time.Minute,
	},
}

// incidentPolicyOptions bound the policy decision of runs recorded before versionSuspendFirst: if
// policy cannot answer within a minute the run decides without it (fail closed: a critical alert
// suspends).
var incidentPolicyOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    10 * time.Second,
	ScheduleToCloseTimeout: time.Minute,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    200 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    10 * time.Second,
	},
}

// incidentLocalOptions bound one local attempt at the suspension, the revocation or the policy
// decision in the run's first workflow task: a few retries within 30 seconds. A suspension or
// revocation still failing after them is handed to a regular activity (incidentOptions), retried for
// as long as the run lives.
var incidentLocalOptions = workflow.LocalActivityOptions{
	StartToCloseTimeout:    5 * time.Second,
	ScheduleToCloseTimeout: 30 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    100 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    2 * time.Second,
	},
}

// incident is the state of one incident run, shared by the main loop and the update handler.
type incident struct {
	in       IncidentInput
	id       string
	status   IncidentStatus
	decided  *TakenDecision
	applied  bool  // the decision has been carried out (or failed: applyErr)
	applyErr error // why carrying out the decision failed
	tokenGate
}

// IncidentWorkflow responds to one alert as policy says for its severity and the agent's risk tier
// (IncidentInput.Actions, decided by the consumer): first it suspends the agent and revokes its
// tokens (cause alert:<id>; local activities, so within the run's first workflow task), then records
// lifecycle.incident_opened, notifies the owner (security for an unknown agent) and, when it
// suspended, waits for a
// decision (update "decide" with an approval token, restore or retire) from the owner, escalating to
// the sponsor and then to security when nobody answers. Restore resumes the agent, retire retires it
// with trigger anomaly (the deprovisioning run follows). It ends with lifecycle.incident_resolved.
// Query "status" shows where it is and who may decide.
func IncidentWorkflow(ctx workflow.Context, in IncidentInput) (IncidentResult, error) {
	if err := in.validate(); err != nil {
		return IncidentResult{}, err
	}
	if in.OwnerFor <= 0 {
		in.OwnerFor = DefaultIncidentOwnerFor
	}
	if in.SponsorFor <= 0 {
		in.SponsorFor = DefaultIncidentSponsorFor
	}
	r := &incident{in: in, id: workflow.GetInfo(ctx).WorkflowExecution.ID, status: IncidentStatus{
		Stage: StageIncidentPolicy, Agent: in.Agent, AlertID: in.AlertID, Detector: in.Detector, Severity: in.Severity,
	}}
	if err := r.registerHandlers(ctx); err != nil {
		return IncidentResult{}, err
	}
	ctx = workflow.WithActivityOptions(ctx, incidentOptions)
	if err := workflow.UpsertTypedSearchAttributes(ctx, identityAttributes(in.AgentID, in.Tenant, in.RiskTier, StageIncidentPolicy)...); err != nil {
		return IncidentResult{}, err
	}
	res, err := r.run(ctx)
	if err != nil {
		r.status.WaitingFor, r.status.MayAct, r.status.Decider = "", nil, ""
		r.status.Reason = errorMessage(err)
		if temporal.IsCanceledError(err) {
			ctx, _ = workflow.NewDisconnectedContext(ctx)
		}
		if serr := r.setStage(ctx, StageFailed); serr != nil {
			workflow.GetLogger(ctx).Error("cannot record the failed stage", "error", serr)
		}
		return IncidentResult{}, err
	}
	if err := r.setStage(ctx, StageDone); err != nil {
		return IncidentResult{}, err
	}
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return IncidentResult{}, err
	}
	return res, nil
}

// run responds to the alert: since versionSuspendFirst it suspends and revokes first (local
// activities in the run's first workflow task), then records incident_opened, then notifies.
func (r *incident) run(ctx workflow.Context) (IncidentResult, error) {
	if workflow.GetVersion(ctx, versionSuspendFirst, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return r.runV0(ctx)
	}
	actions := r.inputActions(ctx)
	r.status.Actions = actions
	r.log(ctx, "opened: "+r.in.Detector+" "+r.in.Severity+", policy: "+strings.Join(actions, ", "))
	suspended := false
	if slices.Contains(actions, ActionSuspend) && r.in.AgentKnown {
		var err error
		if suspended, err = r.suspend(ctx, true); err != nil {
			return IncidentResult{}, err
		}
	}
	if err := r.recordOpened(ctx, actions); err != nil {
		return IncidentResult{}, err
	}
	return r.respond(ctx, actions, suspended)
}

// runV0 is run as recorded before versionSuspendFirst: policy as an activity, incident_opened, then
// the suspension as activities.
func (r *incident) runV0(ctx workflow.Context) (IncidentResult, error) {
	actions := r.decideActions(ctx)
	r.status.Actions = actions
	if err := r.recordOpened(ctx, actions); err != nil {
		return IncidentResult{}, err
	}
	r.log(ctx, "opened: "+r.in.Detector+" "+r.in.Severity+", policy: "+strings.Join(actions, ", "))

	suspended := false
	if slices.Contains(actions, ActionSuspend) && r.in.AgentKnown {
		var err error
		if suspended, err = r.suspend(ctx, false); err != nil {
			return IncidentResult{}, err
		}
	}
	return r.respond(ctx, actions, suspended)
}

// recordOpened records lifecycle.incident_opened.
func (r *incident) recordOpened(ctx workflow.Context, actions []string) error {
	return workflow.ExecuteActivity(ctx, acts.RecordIncidentOpened, IncidentOpenedRecord{
		Tenant: r.in.Tenant, Agent: r.in.Agent, AgentID: r.in.AgentID, AlertID: r.in.AlertID, WorkflowID: r.id,
		Detector: r.in.Detector, Severity: r.in.Severity, Actions: actions, CausationID: r.in.EventID,
		IdempotencyKey: requestID(r.id, "opened"),
	}).Get(ctx, nil)
}

// respond notifies and, when the agent was suspended, waits for the decision, carries it out and
// resolves the incident.
func (r *incident) respond(ctx workflow.Context, actions []string, suspended bool) (IncidentResult, error) {
	if slices.Contains(actions, ActionNotify) || suspended {
		recipient := StepOwner
		if !r.in.AgentKnown {
			recipient = StepSecurity
		}
		r.notify(ctx, "incident.opened", recipient)
	}
	if !suspended {
		return r.resolve(ctx, OutcomeNotified, nil)
	}

	if err := r.await(ctx); err != nil {
		return IncidentResult{}, err
	}
	d := r.decided
	var err error
	if d.Decision == DecisionRestore {
		err = r.restore(ctx, d)
	} else {
		err = r.retire(ctx, d)
	}
	if err != nil {
		r.applyErr, r.applied = err, true
		return IncidentResult{}, err
	}
	outcome := OutcomeRestored
	if d.Decision == DecisionRetire {
		outcome = OutcomeRetired
	}
	res, err := r.resolve(ctx, outcome, d)
	r.applied = true
	if err != nil {
		r.applyErr = err
	}
	return res, err
}

// inputActions are the actions the consumer decided (IncidentInput.Actions); without them the run
// asks policy (a local activity); actions the run does not know are a policy that could not be
// evaluated: a critical alert suspends (fail closed), any other notifies.
func (r *incident) inputActions(ctx workflow.Context) []string {
	switch {
	case validIncidentActions(r.in.Actions):
		return slices.Clone(r.in.Actions)
	case len(r.in.Actions) > 0:
		return r.fallbackActions(ctx, fmt.Sprintf("unknown actions %q", r.in.Actions))
	}
	var out IncidentActions
	lctx := workflow.WithLocalActivityOptions(ctx, incidentLocalOptions)
	err := workflow.ExecuteLocalActivity(lctx, acts.DecideIncidentActions, r.policyRequest()).Get(ctx, &out)
	return r.checkedActions(ctx, out, err)
}

// decideActions asks policy which actions the alert calls for (runs before versionSuspendFirst);
// when policy cannot answer, a critical alert suspends (fail closed) and any other notifies.
func (r *incident) decideActions(ctx workflow.Context) []string {
	var out IncidentActions
	pctx := workflow.WithActivityOptions(ctx, incidentPolicyOptions)
	err := workflow.ExecuteActivity(pctx, acts.DecideIncidentActions, r.policyRequest()).Get(ctx, &out)
	return r.checkedActions(ctx, out, err)
}

func (r *incident) policyRequest() IncidentPolicyRequest {
	return IncidentPolicyRequest{
		Tenant: r.in.Tenant, Severity: r.in.Severity, RiskTier: r.in.RiskTier, Detector: r.in.Detector, AgentKnown: r.in.AgentKnown,
	}
}

// checkedActions are policy's answer, or the fallback when it failed or named no actions.
func (r *incident) checkedActions(ctx workflow.Context, out IncidentActions, err error) []string {
	if err == nil && len(out.Actions) > 0 {
		return out.Actions
	}
	reason := "no actions"
	if err != nil {
		reason = errorMessage(err)
	}
	return r.fallbackActions(ctx, reason)
}

// fallbackActions records why policy could not be evaluated and returns FallbackIncidentActions.
func (r *incident) fallbackActions(ctx workflow.Context, reason string) []string {
	fallback := FallbackIncidentActions(r.in.Severity)
	r.log(ctx, "policy could not be evaluated ("+reason+"): "+strings.Join(fallback, ", "))
	return fallback
}

// suspend suspends the agent and revokes every token of it; suspended is false when the agent was in
// no state to suspend (e.g. already retiring), which is recorded. With local, both are local
// activities first (no round trip through the server's activity queue), handed to a regular activity
// when the local attempts fail with a retryable error; the requests are idempotent by request id.
func (r *incident) suspend(ctx workflow.Context, local bool) (bool, error) {
	if err := r.setStage(ctx, StageIncidentSuspend); err != nil {
		return false, err
	}
	var res SuspendResult
	if err := r.execute(ctx, local, acts.IncidentSuspendAgent, IncidentSuspendRequest{
		Agent: r.in.Agent, Cause: IncidentSuspensionCause(r.in.AlertID), Ticket: r.in.AlertID,
		Reason:    fmt.Sprintf("%s alert %s (%s): %s", r.in.Severity, r.in.AlertID, r.in.Detector, r.in.Summary),
		RequestID: requestID(r.id, "suspend"),
	}, &res); err != nil {
		return false, err
	}
	if !res.Suspended {
		r.log(ctx, "not suspended: the agent is "+res.State)
		return false, nil
	}
	r.took(ctx, "suspended")
	if res.Already {
		cause := res.Cause
		if cause == "" {
			cause = "unknown"
		}
		r.log(ctx, "the agent was suspended already, not by this incident (cause "+cause+"): a restore will not resume it")
	}
	// Retryable failures are retried for as long as the run lives; one the issuer refuses for good is
	// recorded and the run goes on: the issuer's revocation reactor revokes a suspended agent's tokens
	// anyway, and the suspended agent must stay decidable.
	if err := r.execute(ctx, local, acts.IncidentRevokeTokens, IncidentRevokeRequest{
		Tenant: r.in.Tenant, Agent: r.in.Agent, Reason: "incident " + r.in.AlertID + ": agent suspended",
		RequestID: requestID(r.id, "revoke"),
	}, nil); err != nil {
		if temporal.IsCanceledError(err) {
			return false, err
		}
		r.log(ctx, "tokens not revoked explicitly ("+errorMessage(err)+"); the issuer revokes a suspended agent's tokens itself")
		return true, nil
	}
	r.took(ctx, "tokens revoked")
	return true, nil
}

// execute runs activity fn with req and stores its result in out (when not nil): with local, as a
// local activity (incidentLocalOptions) and, when that fails with an error a retry may cure, then as
// a regular activity (the context's options); else as a regular activity only.
func (r *incident) execute(ctx workflow.Context, local bool, fn, req, out any) error {
	if local {
		lctx := workflow.WithLocalActivityOptions(ctx, incidentLocalOptions)
		err := workflow.ExecuteLocalActivity(lctx, fn, req).Get(ctx, out)
		var app *temporal.ApplicationError
		switch {
		case err == nil:
			return nil
		case temporal.IsCanceledError(err), errors.As(err, &app) && app.NonRetryable():
			return err
		}
		r.log(ctx, "local attempts failed ("+errorMessage(err)+"): retried as an activity")
	}
	return workflow.ExecuteActivity(ctx, fn, req).Get(ctx, out)
}

// notify sends one notification to recipient (owner, sponsor or security) and records it taken; a
// notification that cannot be delivered after its retries is recorded, never fatal.
func (r *incident) notify(ctx workflow.Context, kind, recipient string) {
	stage := r.status.Stage
	if stage == StageIncidentPolicy || stage == StageIncidentSuspend {
		_ = r.setStage(ctx, StageIncidentNotify)
	}
	if r.send(ctx, kind, recipient, "") {
		r.took(ctx, "notified "+recipient)
	}
}

// send delivers one notification of kind to recipient (id suffix idSuffix, for notifications of a
// kind sent more than once) and reports whether it was delivered; a failure is logged in the
// timeline unless it is a reminder (counted by the caller).
func (r *incident) send(ctx workflow.Context, kind, recipient, idSuffix string) bool {
	to := ""
	switch recipient {
	case StepOwner:
		to = r.in.Owner
	case StepSponsor:
		to = r.in.Sponsor
	}
	nctx := workflow.WithActivityOptions(ctx, notifyOptions)
	var res NotifyResult
	err := workflow.ExecuteActivity(nctx, acts.IncidentNotify, Notification{
		ID: requestID(r.id, "notify/"+kind+"/"+recipient+idSuffix), Kind: kind, Tenant: r.in.Tenant, Agent: r.in.Agent,
		AlertID: r.in.AlertID, Detector: r.in.Detector, Severity: r.in.Severity, Summary: r.in.Summary,
		RecipientRole: recipient, Recipient: to, Actions: slices.Clone(r.status.Taken), Decider: r.status.Decider,
		WorkflowID: r.id, RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID, Time: workflow.Now(ctx).UTC(),
	}).Get(ctx, &res)
	reminder := kind == NotificationIncidentReminder
	switch {
	case err != nil:
		if !reminder {
			r.log(ctx, "notification to "+recipient+" failed: "+errorMessage(err))
		}
		return false
	case !res.Delivered:
		if !reminder {
			r.log(ctx, "notification to "+recipient+" not sent: "+res.Detail)
		}
		return false
	}
	return true
}

// await waits for a decision, handing the step to the sponsor and then to security when the
// current decider does not answer in time.
func (r *incident) await(ctx workflow.Context) error {
	type rung struct {
		step string
		wait time.Duration
	}
	var ladder []rung
	if r.in.Owner != "" {
		ladder = append(ladder, rung{StepOwner, r.in.OwnerFor})
	}
	if r.in.Sponsor != "" {
		ladder = append(ladder, rung{StepSponsor, r.in.SponsorFor})
	}
	ladder = append(ladder, rung{StepSecurity, 0})
	if err := r.setStage(ctx, StageIncidentDecide); err != nil {
		return err
	}
	for i, step := range ladder {
		r.status.Decider = step.step
		r.status.WaitingFor = "a decision (restore or retire) by " + step.step
		r.status.MayAct = IncidentStepRoles(step.step)
		if i > 0 {
			r.took(ctx, "escalated to "+step.step)
			r.notify(ctx, "incident.escalated", step.step)
		}
		if step.wait == 0 {
			if workflow.GetVersion(ctx, versionIncidentSecurityReminders, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
				return workflow.Await(ctx, func() bool { return r.decided != nil })
			}
			return r.remindSecurity(ctx)
		}
		ok, err := workflow.AwaitWithTimeout(ctx, step.wait, func() bool { return r.decided != nil })
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return nil
}

// restore lifts the suspension this incident made (expected cause alert:<alert id>); a suspension of
// another cause (an operator, a review, another incident) is left in place and the timeline says so.
// remindSecurity waits for security's decision, reminding security every SecurityRemindEvery (at
// most daily after IncidentRemindersAtFullRate reminders). Reminders are counted in the status and
// summed up in one timeline line once decided; each notification has its own id.
func (r *incident) remindSecurity(ctx workflow.Context) error {
	every := r.in.SecurityRemindEvery
	switch {
	case every <= 0:
		every = DefaultIncidentSecurityRemindEvery
	case every < MinIncidentSecurityRemindEvery:
		every = MinIncidentSecurityRemindEvery
	}
	failed := 0
	for {
		wait := every
		if r.status.Reminders >= IncidentRemindersAtFullRate && wait < 24*time.Hour {
			wait = 24 * time.Hour
		}
		ok, err := workflow.AwaitWithTimeout(ctx, wait, func() bool { return r.decided != nil })
		if err != nil {
			return err
		}
		if ok {
			break
		}
		r.status.Reminders++
		if !r.send(ctx, NotificationIncidentReminder, StepSecurity, fmt.Sprintf("/%d", r.status.Reminders)) {
			failed++
		}
		now := workflow.Now(ctx).UTC()
		r.status.LastReminder = &now
	}
	if r.status.Reminders > 0 {
		line := fmt.Sprintf("security reminded %d times, the last at %s", r.status.Reminders, r.status.LastReminder.Format(time.RFC3339))
		if failed > 0 {
			line += fmt.Sprintf(" (%d could not be delivered)", failed)
		}
		r.log(ctx, line)
	}
	return nil
}

func (r *incident) restore(ctx workflow.Context, d *TakenDecision) error {
	if err := r.setStage(ctx, StageIncidentRestore); err != nil {
		return err
	}
	var res IncidentResumeResult
	if err := workflow.ExecuteActivity(ctx, acts.IncidentResumeAgent, IncidentResumeRequest{
		Agent: r.in.Agent, Ticket: r.in.AlertID, ExpectedCause: IncidentSuspensionCause(r.in.AlertID),
		Reason:    fmt.Sprintf("incident %s: restored by %s (%s)%s", r.in.AlertID, d.Decider, d.Role, incidentComment(d.Comment)),
		RequestID: requestID(r.id, "restore"),
	}).Get(ctx, &res); err != nil {
		return err
	}
	if res.NotResumed {
		r.took(ctx, "restore decided by "+d.Decider+"; not resumed: "+res.Detail)
		return nil
	}
	r.took(ctx, "restored by "+d.Decider)
	return nil
}

// IncidentSuspensionCause is the suspension cause of the incident of alertID: alert:<alert id>.
func IncidentSuspensionCause(alertID string) string { return "alert:" + alertID }

func (r *incident) retire(ctx workflow.Context, d *TakenDecision) error {
	if err := r.setStage(ctx, StageIncidentRetire); err != nil {
		return err
	}
	if err := workflow.ExecuteActivity(ctx, acts.IncidentRetireAgent, IncidentRetireRequest{
		Agent: r.in.Agent, Ticket: r.in.AlertID, Trigger: RetireTriggerAnomaly,
		Reason:    fmt.Sprintf("incident %s: retired by %s (%s)%s", r.in.AlertID, d.Decider, d.Role, incidentComment(d.Comment)),
		RequestID: requestID(r.id, "retire"),
	}).Get(ctx, nil); err != nil {
		return err
	}
	r.took(ctx, "retired by "+d.Decider)
	return nil
}

func incidentComment(c string) string {
	if c == "" {
		return ""
	}
	return ": " + c
}

// resolve records lifecycle.incident_resolved and the run's outcome.
func (r *incident) resolve(ctx workflow.Context, outcome string, d *TakenDecision) (IncidentResult, error) {
	r.status.Outcome = outcome
	r.status.WaitingFor, r.status.MayAct, r.status.Decider = "", nil, ""
	decidedBy := ""
	if d != nil {
		decidedBy = d.Decider
	}
	if err := workflow.ExecuteActivity(ctx, acts.RecordIncidentResolved, IncidentResolvedRecord{
		Tenant: r.in.Tenant, Agent: r.in.Agent, AgentID: r.in.AgentID, AlertID: r.in.AlertID, WorkflowID: r.id,
		Outcome: outcome, DecidedBy: decidedBy, Timeline: slices.Clone(r.status.Timeline), CausationID: r.in.EventID,
		IdempotencyKey: requestID(r.id, "resolved"),
	}).Get(ctx, nil); err != nil {
		return IncidentResult{}, err
	}
	return IncidentResult{Result: outcome, DecidedBy: decidedBy, Timeline: slices.Clone(r.status.Timeline), Taken: slices.Clone(r.status.Taken)}, nil
}

// took records an action taken (status and timeline).
func (r *incident) took(ctx workflow.Context, what string) {
	r.status.Taken = append(r.status.Taken, what)
	r.log(ctx, what)
}

// log adds a line to the timeline.
func (r *incident) log(ctx workflow.Context, what string) {
	r.status.Timeline = append(r.status.Timeline, workflow.Now(ctx).UTC().Format(time.RFC3339)+" "+what)
}

func (r *incident) setStage(ctx workflow.Context, stage string) error {
	r.status.Stage = stage
	return workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(stage))
}

func (r *incident) snapshot() IncidentStatus {
	s := r.status
	s.Actions = slices.Clone(s.Actions)
	s.Taken = slices.Clone(s.Taken)
	s.Timeline = slices.Clone(s.Timeline)
	s.MayAct = slices.Clone(s.MayAct)
	s.Refused = slices.Clone(s.Refused)
	if r.decided != nil {
		d := *r.decided
		s.Decision = &d
	}
	return s
}

// registerHandlers installs query "status" and update "decide".
func (r *incident) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (IncidentStatus, error) { return r.snapshot(), nil }); err != nil {
		return err
	}
	return workflow.SetUpdateHandlerWithOptions(ctx, DecideUpdate,
		func(ctx workflow.Context, d IncidentDecision) (IncidentStatus, error) {
			if _, err := r.verify(ctx, d); err != nil {
				return IncidentStatus{}, err
			}
			if err := workflow.Await(ctx, func() bool { return r.applied }); err != nil {
				return IncidentStatus{}, err
			}
			if r.applyErr != nil {
				return IncidentStatus{}, temporal.NewNonRetryableApplicationError("the decision was taken but could not be carried out: "+errorMessage(r.applyErr), "DECISION_FAILED", nil)
			}
			return r.snapshot(), nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, d IncidentDecision) error {
			return r.precheck(d.normalize())
		}},
	)
}

// normalize trims the decision's fields and lower-cases the decision.
func (d IncidentDecision) normalize() IncidentDecision {
	d.Token = strings.TrimSpace(d.Token)
	d.Decision = strings.ToLower(strings.TrimSpace(d.Decision))
	d.Comment = strings.TrimSpace(d.Comment)
	d.SubmittedBy = strings.TrimSpace(d.SubmittedBy)
	return d
}

// waiting refuses a decision while the run is not waiting for one.
func (r *incident) waiting() error {
	switch {
	case r.decided != nil:
		return fmt.Errorf("%w: the incident has been decided already (%s by %s)", ErrApprovalRefused, r.decided.Decision, r.decided.Decider)
	case r.status.Stage != StageIncidentDecide:
		return fmt.Errorf("%w: the incident run is not waiting for a decision (stage %s)", ErrApprovalRefused, r.status.Stage)
	}
	return nil
}

// precheck refuses, without verifying anything, a decision that cannot count.
func (r *incident) precheck(d IncidentDecision) error {
	if err := r.waiting(); err != nil {
		return err
	}
	if err := tokenRefusal(d.Token, "a decision counts only with a token from the issuer for this run, its step and the decision"); err != nil {
		return err
	}
	return decisionRefusal(d.Decision, DecisionRestore, DecisionRetire)
}

// verify checks d's approval token with VerifyApproval and the run's rules and, when it counts, takes
// the decision. A refused decision is recorded in the status and changes nothing.
func (r *incident) verify(ctx workflow.Context, d IncidentDecision) (TakenDecision, error) {
	d = d.normalize()
	var taken TakenDecision
	err := r.decide(ctx, tokenDecision{
		Agent: r.in.Agent, Token: d.Token, Decision: d.Decision,
		Precheck: func() error { return r.precheck(d) },
		Judge: func(v VerifiedApproval) error {
			var err error
			if taken, err = r.judge(ctx, d, v); err != nil {
				return err
			}
			r.decided = &taken
			r.status.WaitingFor, r.status.MayAct = "", nil
			return nil
		},
		Refuse: func(decider, decision string, err error) error { return r.refuse(ctx, decider, decision, err) },
	})
	if err != nil {
		return TakenDecision{}, err
	}
	return taken, nil
}

// judge applies the run's rules to a verified token: bound to this agent and run, used once, a
// restore or retire decision for the step the run waits for, by someone who may decide it.
func (r *incident) judge(ctx workflow.Context, d IncidentDecision, v VerifiedApproval) (TakenDecision, error) {
	refused := func(format string, args ...any) (TakenDecision, error) {
		return TakenDecision{}, fmt.Errorf("%w: "+format, append([]any{ErrApprovalRefused}, args...)...)
	}
	if err := r.bind(ctx, r.in.Agent, "this incident run", v); err != nil {
		return TakenDecision{}, err
	}
	if err := callerRefusal(d.SubmittedBy, v); err != nil {
		return TakenDecision{}, err
	}
	switch {
	case v.Decision != DecisionRestore && v.Decision != DecisionRetire:
		return refused("an incident is decided with %q or %q, the approval token is for %q", DecisionRestore, DecisionRetire, v.Decision)
	case d.Decision != "" && d.Decision != v.Decision:
		return refused("the approval token is for %s, the request says %s", v.Decision, d.Decision)
	}
	if err := r.waiting(); err != nil {
		return TakenDecision{}, err
	}
	if v.Step != r.status.Decider {
		return refused("the approval token is for the %s step, the incident waits for a decision by %s", v.Step, r.status.Decider)
	}
	role, err := incidentStepRole(r.status.Decider, v)
	if err != nil {
		return TakenDecision{}, err
	}
	return TakenDecision{Decider: v.Subject, Role: role, Step: r.status.Decider, Decision: v.Decision, Comment: d.Comment,
		TokenID: v.TokenID, Time: workflow.Now(ctx).UTC()}, nil
}

// IncidentStepRoles lists who may decide an incident at step: the owner step by the agent's owner
// (or its sponsor as delegate), the sponsor step by the sponsor, the security step by
// security-approver; security-approver may decide at any step, and retire (which only takes access
// away) is also open to approver and tenant-admin.
func IncidentStepRoles(step string) []string {
	var out []string
	switch step {
	case StepOwner:
		out = []string{"the agent's owner", "the agent's sponsor (the owner's delegate)"}
	case StepSponsor:
		out = []string{"the agent's sponsor"}
	}
	out = append(out, "security-approver")
	for _, r := range RejectAnyStepRoles {
		out = append(out, r+" (retire only)")
	}
	return out
}

// incidentStepRole is the role in which v's subject decides step, or why it may not.
func incidentStepRole(step string, v VerifiedApproval) (string, error) {
	switch step {
	case StepOwner:
		if role := ownerRole(v); role != "" {
			return role, nil
		}
	case StepSponsor:
		if v.Sponsor != "" && v.Subject == v.Sponsor {
			return "sponsor", nil
		}
	}
	if slices.Contains(v.Roles, "security-approver") {
		return "security-approver", nil
	}
	if v.Decision == DecisionRetire {
		for _, role := range RejectAnyStepRoles {
			if slices.Contains(v.Roles, role) {
				return role, nil
			}
		}
	}
	return "", fmt.Errorf("%w: the %s step of an incident is decided by %v; %s holds %v", ErrApprovalRefused, step, IncidentStepRoles(step), v.Subject, v.Roles)
}

// refuse records a refused decision in the status and the log and returns err.
func (r *incident) refuse(ctx workflow.Context, decider, decision string, err error) error {
	keepRefusal(&r.status.Refused, &r.status.RefusedCount, Refusal{
		Time: workflow.Now(ctx), Approver: decider, Step: r.status.Decider, Decision: decision, Reason: err.Error(),
	})
	workflow.GetLogger(ctx).Warn("incident decision refused", "alert", r.in.AlertID, "decider", decider, "error", err)
	return err
}
