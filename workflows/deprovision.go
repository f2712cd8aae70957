package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// DeprovisionInput starts DeprovisionWorkflow for one agent whose retirement was requested.
type DeprovisionInput struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name, tenants/{tenant}/agents/{agent}.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// RiskTier is the agent's risk tier (RiskTierName), for the RiskTier search attribute.
	RiskTier string
	// Reason is why the agent is retired.
	Reason string
	// EventID is the id of the agent.retirement_requested event that started the run.
	EventID string
	// Trigger is what triggered the retirement (one of Triggers; empty: TriggerRequest).
	Trigger string `json:",omitempty"`
	// TriggerTime is when it was triggered (the retirement event's time, UTC); zero: the run's start.
	TriggerTime time.Time `json:",omitzero"`
	// ChangeRef is the change reference: ticket, alert or review id.
	ChangeRef string `json:",omitempty"`
	// SignOffSteps are the sign-offs the run waits for after verification, in order (StepOwner,
	// StepSecurity). Empty: both, unless NoSignOff.
	SignOffSteps []string `json:",omitempty"`
	// NoSignOff ends the run without sign-offs (configured per trigger, e.g. for ephemeral agents).
	NoSignOff bool `json:",omitempty"`
	// RemindEvery is how often a waiting sign-off is reminded (default DefaultSignOffRemindEvery).
	RemindEvery time.Duration `json:",omitempty"`
	// EscalateAfter is how long a sign-off may wait before reminders also go to security
	// (default DefaultSignOffEscalateAfter).
	EscalateAfter time.Duration `json:",omitempty"`
	// StartedWithIdentity says that the run was started with the identity search attributes
	// (AgentId, Tenant, RiskTier when known) and Stage StageRevoke, as the lifecycle service starts it;
	// since versionDeprovisionOneTask the run then does not set them again. It is part of the input,
	// not read from the search attributes, because those change while the run goes on and a replay
	// must take the same decision.
	StartedWithIdentity bool `json:",omitempty"`
}

// DeprovisionResult is how a deprovisioning run ended.
type DeprovisionResult struct {
	// Result is ResultRetired.
	Result string
	// VerifyTime is when revocation was verified.
	VerifyTime time.Time
	// Checks are the verification checks that passed.
	Checks []string
	// Trigger is what triggered the run (since versionDeprovisionSaga).
	Trigger string `json:",omitempty"`
	// TriggerTime is when it was triggered (since versionDeprovisionSaga).
	TriggerTime time.Time `json:",omitzero"`
	// Steps are the saga's steps with their times and results (since versionDeprovisionSaga).
	Steps []DeprovisionStep `json:",omitempty"`
	// SignOffs are the sign-offs taken, in order (since versionDeprovisionSaga).
	SignOffs []Approval `json:",omitempty"`
}

// maxRevokeRounds bounds how often the run disables the client again when verification still finds it
// active (a client created concurrently with the retirement).
const maxRevokeRounds = 5

// DeprovisionWorkflow retires an agent. Since versionDeprovisionSaga it runs the saga of deprovision.go
// (runSaga); runs recorded before it stop a provisioning run still in progress, disable the agent's
// OAuth client (revoking its tokens), verify that the client is disabled, record the verification in
// the registry (RETIRED) and as lifecycle.deprovisioning_verified.
func DeprovisionWorkflow(ctx workflow.Context, in DeprovisionInput) (DeprovisionResult, error) {
	if err := validateAgent(in.Tenant, in.Agent, in.AgentID); err != nil {
		return DeprovisionResult{}, err
	}
	if err := checkTrigger(in.Trigger); err != nil {
		return DeprovisionResult{}, err
	}
	if workflow.GetVersion(ctx, versionDeprovisionSaga, workflow.DefaultVersion, 1) >= 1 {
		d := &deprovision{in: in, id: workflow.GetInfo(ctx).WorkflowExecution.ID, status: Status{Stage: StageSuspend}}
		return d.run(ctx)
	}
	return deprovisionV0(ctx, in)
}

// deprovisionV0 is DeprovisionWorkflow as recorded before versionDeprovisionSaga.
func deprovisionV0(ctx workflow.Context, in DeprovisionInput) (DeprovisionResult, error) {
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	status := Status{Stage: StageRevoke}
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) { return status, nil }); err != nil {
		return DeprovisionResult{}, err
	}
	setStage := func(stage string) error {
		status.Stage = stage
		return workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(stage))
	}
	fail := func(err error) (DeprovisionResult, error) {
		status.Reason = err.Error()
		if serr := setStage(StageFailed); serr != nil {
			workflow.GetLogger(ctx).Error("cannot record the failed stage", "error", serr)
		}
		return DeprovisionResult{}, err
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, identityAttributes(in.AgentID, in.Tenant, in.RiskTier, StageRevoke)...); err != nil {
		return DeprovisionResult{}, err
	}
	// A provisioning run that still waits must not activate the agent behind our back; an error only
	// means there is no such run or it has finished.
	if err := workflow.RequestCancelExternalWorkflow(ctx, ProvisionWorkflowID(in.Tenant, in.AgentID), "").Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Debug("no provisioning run to cancel", "error", err)
	}

	actx := workflow.WithActivityOptions(ctx, activityOptions)
	var v Verification
	for round := 1; ; round++ {
		step := StageRevoke
		if round > 1 { // a new request id, so the issuer does not take it for a repeat of the first
			step = fmt.Sprintf("%s-%d", StageRevoke, round)
			if err := setStage(StageRevoke); err != nil {
				return DeprovisionResult{}, err
			}
		}
		var disabled DisableResult
		if err := workflow.ExecuteActivity(actx, acts.DisableClient, DisableClientRequest{
			Tenant: in.Tenant, AgentID: in.AgentID, Reason: in.Reason, RequestID: requestID(id, step),
		}).Get(actx, &disabled); err != nil {
			return fail(err)
		}
		if err := setStage(StageVerify); err != nil {
			return DeprovisionResult{}, err
		}
		err := workflow.ExecuteActivity(actx, acts.VerifyRevocation, VerifyRequest{Tenant: in.Tenant, AgentID: in.AgentID}).Get(actx, &v)
		if err == nil {
			break
		}
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != ErrStillActive || round == maxRevokeRounds {
			return fail(err)
		}
		workflow.GetLogger(ctx).Warn("client still active after disabling; revoking again", "agent", in.Agent, "round", round)
		if err := workflow.Sleep(ctx, time.Duration(round)*10*time.Second); err != nil {
			return fail(err)
		}
	}

	if err := workflow.ExecuteActivity(actx, acts.CompleteRetirement, CompleteRetirementRequest{
		Agent: in.Agent, VerifyTime: v.VerifyTime, RequestID: requestID(id, "retire"),
	}).Get(actx, nil); err != nil {
		return fail(err)
	}
	if err := workflow.ExecuteActivity(actx, acts.RecordDeprovisioningVerified, DeprovisioningVerifiedRecord{
		Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, WorkflowID: id,
		VerifyTime: v.VerifyTime, Checks: v.Checks, CausationID: in.EventID, IdempotencyKey: requestID(id, "verified"),
	}).Get(actx, nil); err != nil {
		return fail(err)
	}
	status.Result = ResultRetired
	if err := setStage(StageDone); err != nil {
		return DeprovisionResult{}, err
	}
	return DeprovisionResult{Result: ResultRetired, VerifyTime: v.VerifyTime, Checks: v.Checks}, nil
}
