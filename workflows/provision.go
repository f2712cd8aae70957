package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// ProvisionInput starts ProvisionWorkflow for one registered agent.
type ProvisionInput struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name, tenants/{tenant}/agents/{agent}.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// RiskTier is the agent's risk tier (RiskTierName), for the RiskTier search attribute.
	RiskTier string
	// EventID is the id of the agent.registered event that started the run, recorded as causation.
	EventID string
	// EscalateAfter is how long an approval step may wait with one holder before the run hands it to
	// the next approver in line (EscalationChain; default DefaultEscalateAfter). Runs recorded before
	// change approval-escalation only mark themselves escalated once, after it.
	EscalateAfter time.Duration
	// RemindEvery is how often the holder of a waiting step is reminded (default DefaultRemindEvery;
	// since change approval-escalation).
	RemindEvery time.Duration `json:",omitempty"`
	// ApprovalDeadline is how long approvals may wait before the request is rejected as expired
	// (default DefaultApprovalDeadline).
	ApprovalDeadline time.Duration
	// Registrant is who registered the agent (the actor of agent.registered); it never approves the
	// agent. Empty when unknown.
	Registrant string `json:",omitempty"`
}

// ProvisionResult is how a provisioning run ended.
type ProvisionResult struct {
	// Result is ResultActivated or ResultRejected.
	Result string
	// DecisionID is the policy decision id.
	DecisionID string
	// ApprovedBy lists AutoApprover or the approvers, in order.
	ApprovedBy []string
	// Reason explains a rejection.
	Reason string
	// Client is the created OAuth client's resource name, when activated.
	Client string
}

func (in ProvisionInput) validate() error {
	return validateAgent(in.Tenant, in.Agent, in.AgentID)
}

func validateAgent(tenant, agent, agentID string) error {
	t, id, ok := ParseAgentName(agent)
	switch {
	case !ok:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("agent %q is not tenants/{tenant}/agents/{agent}", agent), "INVALID_ARGUMENT", nil)
	case t != tenant:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("agent %q is not in tenant %q", agent, tenant), "INVALID_ARGUMENT", nil)
	case id != agentID:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("agent %q does not have id %q", agent, agentID), "INVALID_ARGUMENT", nil)
	}
	return nil
}

// DefaultRemindEvery is how often the holder of a waiting approval step is reminded.
const DefaultRemindEvery = 24 * time.Hour

// provision is the state of one provisioning run, shared by the main loop and its handlers.
type provision struct {
	in       ProvisionInput
	id       string
	status   Status
	decision AdmissionDecision
	pending  []Approval
	enqueued int     // approvals enqueued so far (signals and updates)
	taken    int     // approvals the main loop has dealt with
	outcomes []error // per enqueued approval: nil when taken, an error when dropped
	signals  workflow.ReceiveChannel

	version      workflow.Version // of versionApprovalToken, once versionKnown
	versionKnown bool
	tokenGate

	escalating bool   // since versionApprovalEscalation: steps are handed along EscalationChain
	local      bool   // since versionProvisionLocalSteps: the fast steps run as local activities first
	stageSA    string // the Stage search attribute as the run last set it
	held       int    // index in RequiredApprovals of the step the run waits for
	level      int    // how often that step has been handed on
	notices    int    // notices sent, for their idempotency keys
}

// ProvisionWorkflow decides and carries out an agent's provisioning: policy decision, approvals in the
// order the policy asks for (signal "approval" or update "approve", with escalation and a deadline),
// activation in the registry, the OAuth client at the issuer and the lifecycle.provisioning_decided
// event. Query "status" shows where it is and what it waits for.
func ProvisionWorkflow(ctx workflow.Context, in ProvisionInput) (ProvisionResult, error) {
	if err := in.validate(); err != nil {
		return ProvisionResult{}, err
	}
	if in.EscalateAfter <= 0 {
		in.EscalateAfter = DefaultEscalateAfter
	}
	if in.ApprovalDeadline <= 0 {
		in.ApprovalDeadline = DefaultApprovalDeadline
	}
	if in.RemindEvery <= 0 {
		in.RemindEvery = DefaultRemindEvery
	}
	p := &provision{in: in, id: workflow.GetInfo(ctx).WorkflowExecution.ID, status: Status{Stage: StagePolicy}, stageSA: StagePolicy}
	if err := p.registerHandlers(ctx); err != nil {
		return ProvisionResult{}, err
	}
	ctx = workflow.WithActivityOptions(ctx, activityOptions)
	p.local = workflow.GetVersion(ctx, versionProvisionLocalSteps, workflow.DefaultVersion, 1) >= 1
	if !p.local || !startedWithIdentity(ctx, in) {
		if err := workflow.UpsertTypedSearchAttributes(ctx, identityAttributes(in.AgentID, in.Tenant, in.RiskTier, StagePolicy)...); err != nil {
			return ProvisionResult{}, err
		}
	}

	res, err := p.run(ctx)
	if err != nil {
		p.fail(ctx, err)
		return ProvisionResult{}, err
	}
	p.status.Result, p.status.Reason, p.status.WaitingFor, p.status.MayAct = res.Result, res.Reason, "", nil
	if err := p.setStage(ctx, StageDone); err != nil {
		return ProvisionResult{}, err
	}
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return ProvisionResult{}, err
	}
	return res, nil
}

// startedWithIdentity reports whether the run was started with the search attributes
// identityAttributes would set (the lifecycle service starts runs so), which it then need not set again.
func startedWithIdentity(ctx workflow.Context, in ProvisionInput) bool {
	sa := workflow.GetTypedSearchAttributes(ctx)
	id, _ := sa.GetKeyword(AgentIDKey)
	tenant, _ := sa.GetKeyword(TenantKey)
	stage, _ := sa.GetKeyword(StageKey)
	tier, _ := sa.GetKeyword(RiskTierKey)
	return id == in.AgentID && tenant == in.Tenant && stage == StagePolicy && tier == in.RiskTier
}

// provisionLocalOptions bound the local attempts at one fast step of a provisioning run, within the
// workflow task that reached it: a few retries within 30 seconds, then the step is handed to a regular
// activity (activityOptions), retried for as long as the run lives.
var provisionLocalOptions = workflow.LocalActivityOptions{
	StartToCloseTimeout:    15 * time.Second,
	ScheduleToCloseTimeout: 30 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    100 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    2 * time.Second,
	},
}

// exec runs activity fn with req and stores its result in out (when not nil). Since
// versionProvisionLocalSteps it first runs it as a local activity (provisionLocalOptions), on lctx
// when given (a context the run's cancellation does not reach, for steps whose effect a cancelled run
// must know), and hands it to a regular activity on ctx only when the local attempts failed with an
// error a retry may cure. Runs recorded before the change run it as a regular activity on ctx.
func (p *provision) exec(ctx, lctx workflow.Context, fn, req, out any) error {
	if p.local {
		if lctx == nil {
			lctx = ctx
		}
		lctx = workflow.WithLocalActivityOptions(lctx, provisionLocalOptions)
		err := workflow.ExecuteLocalActivity(lctx, fn, req).Get(lctx, out)
		var app *temporal.ApplicationError
		switch {
		case err == nil:
			return nil
		case temporal.IsCanceledError(err), errors.As(err, &app) && app.NonRetryable():
			return err
		case ctx.Err() != nil:
			// Cancelled while the local attempts ran: the caller sees the cancellation.
			return ctx.Err()
		}
		workflow.GetLogger(ctx).Warn("local attempts failed: retried as an activity", "agent", p.in.Agent, "error", err)
		if p.stageSA != p.status.Stage {
			// The step may now take a while: the Stage search attribute shows it.
			if err := p.setStage(ctx, p.status.Stage); err != nil {
				return err
			}
		}
	}
	return workflow.ExecuteActivity(ctx, fn, req).Get(ctx, out)
}

// uncancelled is a context the run's cancellation does not reach, for the local attempts of a step
// whose effect a cancelled run must know (the local activity then ends before the run goes on).
func uncancelled(ctx workflow.Context) workflow.Context {
	d, _ := workflow.NewDisconnectedContext(ctx)
	return d
}

// passStage records stage in the status; runs since versionProvisionLocalSteps set the Stage search
// attribute to it only when a step of the stage is handed to a regular activity (exec), as a stage
// whose local attempts succeed lasts no longer than the workflow task.
func (p *provision) passStage(ctx workflow.Context, stage string) error {
	if p.local {
		p.status.Stage = stage
		return nil
	}
	return p.setStage(ctx, stage)
}

func (p *provision) run(ctx workflow.Context) (ProvisionResult, error) {
	if err := p.exec(ctx, nil, acts.EvaluateAdmission, AdmissionRequest{
		Tenant: p.in.Tenant, Agent: p.in.Agent, RequestID: requestID(p.id, StagePolicy),
	}, &p.decision); err != nil {
		return ProvisionResult{}, err
	}
	p.status.DecisionID = p.decision.DecisionID

	switch p.decision.Outcome {
	case OutcomeAllow:
		return p.activate(ctx, []string{AutoApprover})
	case OutcomeRequireApproval:
		return p.approve(ctx)
	default:
		reason := "denied by policy"
		if len(p.decision.Reasons) > 0 {
			reason += ": " + strings.Join(p.decision.Reasons, "; ")
		}
		return p.reject(ctx, reason, nil)
	}
}

// approve waits for the approvals the policy asked for, in order, then activates or rejects.
func (p *provision) approve(ctx workflow.Context) (ProvisionResult, error) {
	required := p.decision.RequiredApprovals
	if len(required) == 0 {
		required = []string{AnyStepRoles[0]}
	}
	p.status.RequiredApprovals = required
	if err := p.setStage(ctx, StageApproval); err != nil {
		return ProvisionResult{}, err
	}
	defer p.dropPending()
	if workflow.GetVersion(ctx, versionApprovalEscalation, workflow.DefaultVersion, 1) >= 1 {
		p.escalating = true
		return p.approveEscalating(ctx, required)
	}
	return p.approveV0(ctx, required)
}

// approveV0 is the approval stage of runs recorded before versionApprovalEscalation: after
// EscalateAfter the run only changes its stage to approval-escalated.
func (p *provision) approveV0(ctx workflow.Context, required []string) (ProvisionResult, error) {
	start := workflow.Now(ctx)
	escalateAt, deadline := start.Add(p.in.EscalateAfter), start.Add(p.in.ApprovalDeadline)
	escalated := !escalateAt.Before(deadline)
	var approvers []string

	for len(p.status.ApprovalsSoFar) < len(required) {
		step := required[len(p.status.ApprovalsSoFar)]
		p.status.WaitingFor, p.status.MayAct = "approval by "+step, MayDecide(step)
		if len(p.pending) == 0 {
			until := deadline
			if !escalated {
				until = escalateAt
			}
			got, err := workflow.AwaitWithTimeout(ctx, until.Sub(workflow.Now(ctx)), func() bool { return len(p.pending) > 0 })
			if err != nil {
				return ProvisionResult{}, err
			}
			if !got {
				if !escalated {
					escalated = true
					workflow.GetLogger(ctx).Warn("approval overdue: escalating",
						"agent", p.in.Agent, "waiting_for", step, "waited", p.in.EscalateAfter.String())
					if err := p.setStage(ctx, StageApprovalEscalated); err != nil {
						return ProvisionResult{}, err
					}
					continue
				}
				p.status.WaitingFor, p.status.MayAct = "", nil
				return p.reject(ctx, fmt.Sprintf("approval expired: no decision by %s within %s", step, p.in.ApprovalDeadline), approvers)
			}
		}
		a := p.pending[0]
		p.pending = p.pending[1:]
		p.taken++
		a.Time = workflow.Now(ctx)
		p.status.ApprovalsSoFar = append(p.status.ApprovalsSoFar, a)
		if a.Decision == DecisionReject {
			p.status.WaitingFor, p.status.MayAct = "", nil
			reason := fmt.Sprintf("rejected by %s (%s)", a.Approver, a.Role)
			if a.Comment != "" {
				reason += ": " + a.Comment
			}
			return p.reject(ctx, reason, approvers)
		}
		approvers = append(approvers, a.Approver)
	}
	p.status.WaitingFor, p.status.MayAct = "", nil
	return p.activate(ctx, approvers)
}

// dropPending fails approvals that arrived after the approval stage was decided.
func (p *provision) dropPending() {
	for i := p.taken; i < p.enqueued; i++ {
		p.outcomes[i] = fmt.Errorf("%w: the run already left the approval stage", ErrApprovalRefused)
	}
	p.pending, p.taken = nil, p.enqueued
}

func (p *provision) activate(ctx workflow.Context, approvedBy []string) (ProvisionResult, error) {
	// Runs since versionProvisionLocalSteps postdate these changes: they ask for neither version (each
	// GetVersion records a marker and a search attribute update).
	if !p.local && workflow.GetVersion(ctx, versionClientFirst, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return p.activateThenCreate(ctx, approvedBy)
	}
	if !p.local && workflow.GetVersion(ctx, versionSettleUnusableClient, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return p.createThenActivateV1(ctx, approvedBy)
	}
	// The credential first, so that the agent reads ACTIVE only once its credential works. The
	// client exists for a PENDING agent only between these two steps; if activation does not follow,
	// the run settles the agent (settle): rejected and its client disabled while it is PENDING.
	if err := p.passStage(ctx, StageCredentials); err != nil {
		return ProvisionResult{}, err
	}
	// Both calls have effects a cancelled run must know before it goes on: cancellation waits for
	// them to end.
	wctx := workflow.WithActivityOptions(ctx, activityOptionsWaitingForCancel)
	var client ClientInfo
	err := p.exec(wctx, uncancelled(ctx), acts.CreateClient, CreateClientRequest{
		Tenant: p.in.Tenant, Agent: p.in.Agent, AgentID: p.in.AgentID, RequestID: requestID(p.id, StageCredentials),
	}, &client)
	if err == nil && p.local && ctx.Err() != nil {
		// Cancelled while the local attempt created the client: it is taken back.
		err = ctx.Err()
	}
	switch {
	case temporal.IsCanceledError(err):
		return p.settle(ctx, err, "provisioning was cancelled while the agent's client was created", approvedBy, true)
	case IsClientUnusable(err):
		// Not this run's client (or already disabled): nothing to take back.
		return p.settle(ctx, err, "the agent's client id cannot be used: "+errorMessage(err), approvedBy, false)
	case err != nil:
		// CreateClient takes back a client it made for an agent that left provisioning.
		return ProvisionResult{}, err
	}
	if err := p.passStage(ctx, StageActivate); err != nil {
		return p.settle(ctx, err, "provisioning failed before activation", approvedBy, true)
	}
	activation := ActivateRequest{
		Agent: p.in.Agent, DecisionID: p.decision.DecisionID, ApprovedBy: strings.Join(approvedBy, ","),
		RequestID: requestID(p.id, StageActivate),
	}
	// Only a decision with an override asks for the version: runs without one record no marker.
	if p.decision.OverrideRiskTier != "" && workflow.GetVersion(ctx, versionPolicyOverride, workflow.DefaultVersion, 1) >= 1 {
		activation.OverrideRiskTier, activation.OverrideReason = p.decision.OverrideRiskTier, p.decision.OverrideReason
		activation.OverrideSource = OverrideSourcePrefix + p.decision.BundleVersion
	}
	// Only a decision that names the agent version it was made on asks for the version: runs recorded
	// before it activate whatever the agent has become.
	if p.decision.Etag != "" && workflow.GetVersion(ctx, versionActivateEvaluated, workflow.DefaultVersion, 1) >= 1 {
		activation.Etag = p.decision.Etag
	}
	err = p.exec(wctx, uncancelled(ctx), acts.ActivateAgent, activation, nil)
	// Only a decision that carries the policy input's digest asks for the version, once the agent is
	// found changed: runs recorded before it reject every changed agent.
	if errorType(err) == ReasonAgentChanged && p.decision.PolicyInputDigest != "" &&
		workflow.GetVersion(ctx, versionActivateNeutralChanges, workflow.DefaultVersion, 1) >= 1 {
		err = p.activateNeutralChange(ctx, wctx, activation, err)
	}
	if err != nil {
		reason := "the agent could not be activated: " + errorMessage(err)
		if errorType(err) == ReasonAgentChanged {
			reason = fmt.Sprintf("the agent changed after the policy decided on its version %s, so that decision does not cover it: "+
				"it is not activated; register it again to have the changed agent decided", p.decision.Etag)
		}
		return p.settle(ctx, err, reason, approvedBy, true)
	}
	res := ProvisionResult{Result: ResultActivated, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy, Client: client.Name}
	return res, p.recordDecided(carryOn(ctx), res)
}

// maxNeutralReactivations bounds the activations of an agent that keeps changing in neutral fields
// while the run activates it.
const maxNeutralReactivations = 3

// activateNeutralChange handles an activation refused because the agent changed after the policy
// decided (changed, ReasonAgentChanged): when the agent's policy input is still the one the policy
// evaluated (only neutral fields changed: labels, display name, ...), it activates the agent at its
// current version, a few times at most if it keeps changing; otherwise it returns changed, and the run
// rejects the agent as before.
func (p *provision) activateNeutralChange(ctx, wctx workflow.Context, activation ActivateRequest, changed error) error {
	err := changed
	for range maxNeutralReactivations {
		var cur PolicyInput
		if rerr := p.exec(ctx, nil, acts.ReadPolicyInput, PolicyInputRequest{Agent: p.in.Agent}, &cur); rerr != nil {
			workflow.GetLogger(ctx).Warn("cannot read the changed agent's policy input", "agent", p.in.Agent, "error", rerr)
			return changed
		}
		if cur.Digest != p.decision.PolicyInputDigest || cur.Etag == "" {
			return changed
		}
		workflow.GetLogger(ctx).Info("the agent changed only in fields the policy does not read: activated at its current version",
			"agent", p.in.Agent, "evaluated_etag", p.decision.Etag, "etag", cur.Etag)
		activation.Etag = cur.Etag
		activation.RequestID = requestID(p.id, StageActivate) + "/" + cur.Etag
		err = p.exec(wctx, uncancelled(ctx), acts.ActivateAgent, activation, nil)
		if errorType(err) != ReasonAgentChanged {
			return err
		}
	}
	return err
}

// maxRejectReasonLen bounds a rejection reason (the registry accepts 1000 bytes).
const maxRejectReasonLen = 900

// settle ends a run whose client was not put to use (cause: a cancellation, a client id that cannot
// be used, a failed activation). The agent is rejected while it is still PENDING: a final state, so
// no later run asks the approvers again for a client id that can never work, and nothing can activate
// it any more; then the client this run created (undo) is disabled and the rejection recorded. If the
// agent is ACTIVE (an activation that took effect although its call was cancelled or failed), its
// client stays and the activation is recorded. If it has left provisioning otherwise (retiring,
// retired, rejected), the client is disabled and the run fails with cause: deprovisioning owns the
// agent. A cancelled run still ends cancelled.
func (p *provision) settle(ctx workflow.Context, cause error, reason string, approvedBy []string, undo bool) (ProvisionResult, error) {
	dctx := workflow.WithActivityOptions(carryOn(ctx), undoActivityOptions)
	reason = cutReason(reason, maxRejectReasonLen)
	p.status.WaitingFor, p.status.MayAct = "", nil
	if err := p.setStage(dctx, StageReject); err != nil {
		workflow.GetLogger(ctx).Error("cannot record the reject stage", "error", err)
	}
	rerr := p.exec(dctx, nil, acts.RejectAgent, RejectRequest{
		Agent: p.in.Agent, DecisionID: p.decision.DecisionID, Reason: reason, RequestID: requestID(p.id, StageReject),
	}, nil)
	var res ProvisionResult
	switch {
	case rerr == nil:
		if undo {
			p.undoClient(dctx, reason)
		}
		res = ProvisionResult{Result: ResultRejected, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy, Reason: reason}
	case undo && errorType(rerr) == ReasonAgentActive:
		res = ProvisionResult{Result: ResultActivated, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy,
			Client: ClientName(p.in.Tenant, p.in.AgentID)}
	default:
		// The agent left provisioning, or the registry did not answer: no working client may stay.
		workflow.GetLogger(ctx).Warn("the agent was not rejected", "agent", p.in.Agent, "error", rerr)
		if undo {
			p.undoClient(dctx, reason)
		}
		return ProvisionResult{}, cause
	}
	if err := p.recordDecided(dctx, res); err != nil {
		return ProvisionResult{}, err
	}
	if temporal.IsCanceledError(cause) {
		return ProvisionResult{}, cause
	}
	return res, nil
}

// ReasonAgentActive is the registry's reason code for a state change refused because the agent is
// ACTIVE.
const ReasonAgentActive = "AGENT_STATE_ACTIVE"

// carryOn returns ctx, or a context disconnected from its cancellation when the run is being
// cancelled, for the steps a cancelled run still takes.
func carryOn(ctx workflow.Context) workflow.Context {
	if ctx.Err() != nil {
		ctx, _ = workflow.NewDisconnectedContext(ctx)
	}
	return ctx
}

// errorType is the application error type of err, if any.
func errorType(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Type()
	}
	return ""
}

// errorMessage is the message and type of err's application error, or err's text.
func errorMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if app.Type() != "" {
			return app.Message() + " (" + app.Type() + ")"
		}
		return app.Message()
	}
	return err.Error()
}

// createThenActivateV1 is the client-first order of runs recorded before versionSettleUnusableClient:
// a client it cannot use fails the run.
func (p *provision) createThenActivateV1(ctx workflow.Context, approvedBy []string) (ProvisionResult, error) {
	if err := p.setStage(ctx, StageCredentials); err != nil {
		return ProvisionResult{}, err
	}
	var client ClientInfo
	cctx := workflow.WithActivityOptions(ctx, activityOptionsWaitingForCancel)
	err := workflow.ExecuteActivity(cctx, acts.CreateClient, CreateClientRequest{
		Tenant: p.in.Tenant, Agent: p.in.Agent, AgentID: p.in.AgentID, RequestID: requestID(p.id, StageCredentials),
	}).Get(ctx, &client)
	if err != nil {
		if temporal.IsCanceledError(err) {
			p.undoClient(ctx, "provisioning was cancelled while the client was created")
		}
		return ProvisionResult{}, err
	}
	if err := p.setStage(ctx, StageActivate); err != nil {
		p.undoClient(ctx, "provisioning failed before activation")
		return ProvisionResult{}, err
	}
	if err := workflow.ExecuteActivity(ctx, acts.ActivateAgent, ActivateRequest{
		Agent: p.in.Agent, DecisionID: p.decision.DecisionID, ApprovedBy: strings.Join(approvedBy, ","),
		RequestID: requestID(p.id, StageActivate),
	}).Get(ctx, nil); err != nil {
		p.undoClient(ctx, "the agent could not be activated: "+err.Error())
		return ProvisionResult{}, err
	}
	res := ProvisionResult{Result: ResultActivated, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy, Client: client.Name}
	return res, p.recordDecided(ctx, res)
}

// undoClient disables the client this run created, also when the run is being cancelled; a failure
// is logged.
func (p *provision) undoClient(ctx workflow.Context, reason string) {
	ctx = workflow.WithActivityOptions(carryOn(ctx), undoActivityOptions)
	if err := workflow.ExecuteActivity(ctx, acts.DisableClient, DisableClientRequest{
		Tenant: p.in.Tenant, AgentID: p.in.AgentID, Reason: truncateReason(reason), RequestID: requestID(p.id, StageCredentials+"-undo"),
	}).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("cannot disable the client of an agent that was not activated", "agent", p.in.Agent, "error", err)
	}
}

// truncateReason keeps a reason within what the issuer accepts.
func truncateReason(s string) string { return cutReason(s, 200) }

// cutReason keeps at most maxLen bytes of s, on a rune boundary.
func cutReason(s string, maxLen int) string {
	if len(s) <= maxLen {
		return s
	}
	for i := maxLen; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return ""
}

// activateThenCreate is the order of runs recorded before versionClientFirst: activation, then the
// client.
func (p *provision) activateThenCreate(ctx workflow.Context, approvedBy []string) (ProvisionResult, error) {
	if err := p.setStage(ctx, StageActivate); err != nil {
		return ProvisionResult{}, err
	}
	if err := workflow.ExecuteActivity(ctx, acts.ActivateAgent, ActivateRequest{
		Agent: p.in.Agent, DecisionID: p.decision.DecisionID, ApprovedBy: strings.Join(approvedBy, ","),
		RequestID: requestID(p.id, StageActivate),
	}).Get(ctx, nil); err != nil {
		return ProvisionResult{}, err
	}
	if err := p.setStage(ctx, StageCredentials); err != nil {
		return ProvisionResult{}, err
	}
	var client ClientInfo
	if err := workflow.ExecuteActivity(ctx, acts.CreateClient, CreateClientRequest{
		Tenant: p.in.Tenant, Agent: p.in.Agent, AgentID: p.in.AgentID, RequestID: requestID(p.id, StageCredentials),
	}).Get(ctx, &client); err != nil {
		return ProvisionResult{}, err
	}
	res := ProvisionResult{Result: ResultActivated, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy, Client: client.Name}
	return res, p.recordDecided(ctx, res)
}

func (p *provision) reject(ctx workflow.Context, reason string, approvedBy []string) (ProvisionResult, error) {
	if err := p.setStage(ctx, StageReject); err != nil {
		return ProvisionResult{}, err
	}
	if err := p.exec(ctx, nil, acts.RejectAgent, RejectRequest{
		Agent: p.in.Agent, DecisionID: p.decision.DecisionID, Reason: reason, RequestID: requestID(p.id, StageReject),
	}, nil); err != nil {
		return ProvisionResult{}, err
	}
	res := ProvisionResult{Result: ResultRejected, DecisionID: p.decision.DecisionID, ApprovedBy: approvedBy, Reason: reason}
	return res, p.recordDecided(ctx, res)
}

func (p *provision) recordDecided(ctx workflow.Context, res ProvisionResult) error {
	return p.exec(ctx, nil, acts.RecordProvisioningDecided, ProvisioningDecidedRecord{
		Tenant: p.in.Tenant, Agent: p.in.Agent, AgentID: p.in.AgentID, WorkflowID: p.id,
		Result: res.Result, DecisionID: res.DecisionID, ApprovedBy: res.ApprovedBy,
		CausationID: p.in.EventID, IdempotencyKey: requestID(p.id, "decided"),
	}, nil)
}

func (p *provision) setStage(ctx workflow.Context, stage string) error {
	p.status.Stage, p.stageSA = stage, stage
	return workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(stage))
}

// fail marks the run failed; a cancelled run still records its stage.
func (p *provision) fail(ctx workflow.Context, err error) {
	p.status.WaitingFor, p.status.MayAct = "", nil
	p.status.Reason = err.Error()
	if temporal.IsCanceledError(err) {
		ctx, _ = workflow.NewDisconnectedContext(ctx)
	}
	if serr := p.setStage(ctx, StageFailed); serr != nil {
		workflow.GetLogger(ctx).Error("cannot record the failed stage", "error", serr)
	}
}

// registerHandlers installs query "status", signal "approval" and update "approve".
func (p *provision) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) { return p.snapshot(), nil }); err != nil {
		return err
	}
	p.signals = workflow.GetSignalChannel(ctx, ApprovalSignal)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var a Approval
			if !p.signals.Receive(ctx, &a) {
				return
			}
			p.takeSignal(ctx, a)
		}
	})
	return workflow.SetUpdateHandlerWithOptions(ctx, ApproveUpdate,
		func(ctx workflow.Context, a Approval) (Status, error) {
			// Signals that arrived with this update come first: they were sent before it.
			p.drainSignals(ctx)
			a = a.normalize()
			if p.tokensRequired(ctx) {
				taken, err := p.verify(ctx, a)
				if err != nil {
					return Status{}, err
				}
				a = taken
			} else if err := p.acceptable(a); err != nil {
				return Status{}, err
			}
			seq := p.enqueue(a)
			if err := workflow.Await(ctx, func() bool { return p.taken >= seq }); err != nil {
				return Status{}, err
			}
			if err := p.outcomes[seq-1]; err != nil {
				return Status{}, err
			}
			return p.snapshot(), nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, a Approval) error {
			a = a.normalize()
			if !p.versionKnown || p.version >= 1 {
				// The token is verified by the handler (an activity), which refuses with why.
				return p.precheck(a)
			}
			if p.signals.Len() > 0 {
				// Unread signals may cover the next steps; the handler checks the exact step after reading them.
				return p.plausible(a)
			}
			return p.acceptable(a)
		}},
	)
}

// takeSignal queues an approval that arrived as a signal, or logs why it cannot be taken (signals
// cannot be refused to the sender).
func (p *provision) takeSignal(ctx workflow.Context, a Approval) {
	a = a.normalize()
	if p.tokensRequired(ctx) {
		// The lifecycle service relays approvals as updates: a signal's relayer is not known.
		a.SubmittedBy = ""
		if taken, err := p.verify(ctx, a); err == nil {
			p.enqueue(taken)
		}
		return
	}
	if err := p.acceptable(a); err != nil {
		workflow.GetLogger(ctx).Warn("approval signal ignored", "approver", a.Approver, "role", a.Role, "error", err)
		return
	}
	p.enqueue(a)
}

// drainSignals takes the approval signals already delivered but not yet read.
func (p *provision) drainSignals(ctx workflow.Context) {
	for {
		var a Approval
		if !p.signals.ReceiveAsync(&a) {
			return
		}
		p.takeSignal(ctx, a)
	}
}

// acceptable says whether the run can take a now: it must wait for approvals and a must fit the next
// step not yet covered by approvals already taken or queued.
func (p *provision) acceptable(a Approval) error {
	if err := p.waiting(); err != nil {
		return err
	}
	if err := p.separate(a); err != nil {
		return err
	}
	next := len(p.status.ApprovalsSoFar) + len(p.pending)
	if next >= len(p.status.RequiredApprovals) {
		return fmt.Errorf("%w: every required approval has been submitted", ErrApprovalRefused)
	}
	return a.check(p.status.RequiredApprovals[next])
}

// plausible says whether a fits any step not yet covered.
func (p *provision) plausible(a Approval) error {
	if err := p.waiting(); err != nil {
		return err
	}
	if err := p.separate(a); err != nil {
		return err
	}
	var err error
	for _, step := range p.status.RequiredApprovals[min(len(p.status.ApprovalsSoFar)+len(p.pending), len(p.status.RequiredApprovals)):] {
		if err = a.check(step); err == nil {
			return nil
		}
	}
	if err == nil {
		err = fmt.Errorf("%w: every required approval has been submitted", ErrApprovalRefused)
	}
	return err
}

// separate enforces separation of duties: one principal approves at most one step of a run. (Anyone
// entitled may still reject: a rejection only ever stops access.)
func (p *provision) separate(a Approval) error {
	if a.Decision != DecisionApprove {
		return nil
	}
	for _, prior := range append(slices.Clone(p.status.ApprovalsSoFar), p.pending...) {
		if prior.Decision == DecisionApprove && prior.Approver == a.Approver {
			step := prior.Role
			if prior.Step != "" {
				step = prior.Step
			}
			return fmt.Errorf("%w: %s already approved the %s step; each step needs a different approver", ErrApprovalRefused, a.Approver, step)
		}
	}
	return nil
}

func (p *provision) waiting() error {
	if p.status.Stage != StageApproval && p.status.Stage != StageApprovalEscalated {
		return fmt.Errorf("%w: the run is not waiting for approvals (stage %s)", ErrApprovalRefused, p.status.Stage)
	}
	return nil
}

func (p *provision) enqueue(a Approval) int {
	p.pending = append(p.pending, a)
	p.outcomes = append(p.outcomes, nil)
	p.enqueued++
	return p.enqueued
}

func (p *provision) snapshot() Status {
	s := p.status
	s.RequiredApprovals = append([]string(nil), s.RequiredApprovals...)
	s.ApprovalsSoFar = append([]Approval(nil), s.ApprovalsSoFar...)
	s.MayAct = append([]string(nil), s.MayAct...)
	s.Refused = append([]Refusal(nil), s.Refused...)
	return s
}

// IsApprovalRefused reports whether err (e.g. from an update) says the run refused an approval.
func IsApprovalRefused(err error) bool {
	var app *temporal.ApplicationError
	return errors.Is(err, ErrApprovalRefused) || (errors.As(err, &app) && strings.Contains(app.Error(), ErrApprovalRefused.Error()))
}
