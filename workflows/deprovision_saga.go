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

// Retirement triggers, recorded with every deprovisioning run and its evidence.
const (
	TriggerRequest         = "request"
	TriggerTTL             = "ttl"
	TriggerInactivity      = "inactivity"
	TriggerOwnerDeparted   = "owner_departed"
	TriggerReplacement     = "replacement"
	TriggerPolicyViolation = "policy_violation"
	TriggerAnomaly         = "anomaly"
	TriggerTaskCompleted   = "task_completed"
)

// Triggers lists every retirement trigger.
var Triggers = []string{TriggerRequest, TriggerTTL, TriggerInactivity, TriggerOwnerDeparted, TriggerReplacement, TriggerPolicyViolation, TriggerAnomaly, TriggerTaskCompleted}

// Stages of a deprovisioning run since versionDeprovisionSaga (besides StageRevoke, StageVerify, StageDone,
// StageFailed).
const (
	StageSuspend     = "suspend"
	StageRemoveRoles = "remove_roles"
	StageCleanup     = "cleanup"
	StageRetire      = "retire"
	StageSignOff     = "sign_off"
)

// Sign-off of a deprovisioning run.
const (
	// SignOffUpdate carries an Approval with a SIGN_OFF approval token and answers with the run's
	// Status; its validator refuses sign-offs the run cannot take.
	SignOffUpdate = "sign_off"
	// SignOffSignal carries the same Approval as JSON, e.g. from the Temporal UI.
	SignOffSignal = "sign_off"
	// DecisionSignOff is the decision of a sign-off approval token.
	DecisionSignOff = "sign_off"
)

// Defaults of the sign-off stage.
const (
	// DefaultSignOffRemindEvery is how often a waiting sign-off is reminded.
	DefaultSignOffRemindEvery = 24 * time.Hour
	// DefaultSignOffEscalateAfter is how long a sign-off may wait before reminders also go to security.
	DefaultSignOffEscalateAfter = 72 * time.Hour
	// MinSignOffRemindEvery is the shortest interval between two sign-off reminders: a shorter
	// RemindEvery is raised to it, so a waiting run records at most one reminder (a timer and a
	// notice, about ten history events) an hour.
	MinSignOffRemindEvery = time.Hour
	// SignOffRemindersAtFullRate is how many reminders of one sign-off are sent every RemindEvery;
	// after them a sign-off that still waits is reminded at most daily (SlowSignOffRemindEvery).
	SignOffRemindersAtFullRate = 48
	// SlowSignOffRemindEvery is the reminder interval of a sign-off after SignOffRemindersAtFullRate
	// reminders (when RemindEvery is shorter).
	SlowSignOffRemindEvery = 24 * time.Hour
)

// DefaultSignOffSteps are the sign-offs a deprovisioning run waits for unless configured otherwise.
var DefaultSignOffSteps = []string{StepOwner, StepSecurity}

// ErrCleanupFailed is the application error type of a run whose cleanup failed after its retries: the
// agent stays RETIRING (no token, client disabled) and the run is re-driven later.
const ErrCleanupFailed = "CLEANUP_FAILED"

// DeprovisionStep is one step of a deprovisioning run, for the evidence record.
type DeprovisionStep struct {
	// Name is the step (suspend, revoke, remove_roles, cleanup:<name>, verify, retire, sign_off:owner).
	Name string `json:"name"`
	// Time is when it finished (UTC).
	Time time.Time `json:"time"`
	// Result says what it did or found.
	Result string `json:"result"`
	// Actor is who signed, for sign-offs.
	Actor string `json:"actor,omitempty"`
}

// checkTrigger refuses a trigger that is not one of Triggers (empty is TriggerRequest).
func checkTrigger(t string) error {
	if t == "" || slices.Contains(Triggers, t) {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("trigger %q is not one of %v", t, Triggers), "INVALID_ARGUMENT", nil)
}

// cleanupActivityOptions bound one cleanup: a few attempts, then the run compensates.
var cleanupActivityOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    30 * time.Second,
	ScheduleToCloseTimeout: 15 * time.Minute,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    time.Minute,
		MaximumAttempts:    8,
	},
}

// deprovision is the state of one saga run, shared by the main flow and the sign-off handlers.
type deprovision struct {
	in        DeprovisionInput
	id        string
	status    Status
	steps     []DeprovisionStep
	checks    []string
	signOffs  []Approval
	signSteps []string
	tokenGate
	reminders int
	local     bool   // since versionDeprovisionLocalSteps: the fast steps run as local activities first
	oneTask   bool   // since versionDeprovisionOneTask: no step of a run without sign-offs needs a further workflow task
	stageSA   string // the Stage search attribute as the run last set it
}

// deprovisionLocalOptions bound the local attempts at one fast step of a deprovisioning run, within
// the workflow task that reached it: a few retries within a minute, then the step is handed to a
// regular activity (activityOptions), retried for as long as the run lives. One attempt may take
// longer than DefaultReadLag (RemoveGrants and VerifyDeprovisioned allow the issuer that long to show
// a disable) plus its calls, so that a client really still active is reported as such rather than as
// a timeout.
var deprovisionLocalOptions = workflow.LocalActivityOptions{
	StartToCloseTimeout:    25 * time.Second,
	ScheduleToCloseTimeout: 60 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    100 * time.Millisecond,
		BackoffCoefficient: 2,
		MaximumInterval:    2 * time.Second,
	},
}

// exec runs activity fn with args and stores its result in out (when not nil). Since
// versionDeprovisionLocalSteps it first runs it as a local activity (deprovisionLocalOptions) and
// hands it to a regular activity on actx only when the local attempts failed with an error a retry
// may cure (the Stage search attribute then shows the step); runs recorded before the change run it
// as a regular activity on actx. Every step run so is idempotent (request ids derived from the run,
// or read-only).
func (d *deprovision) exec(ctx, actx workflow.Context, out, fn any, args ...any) error {
	if d.local {
		lctx := workflow.WithLocalActivityOptions(ctx, deprovisionLocalOptions)
		err := workflow.ExecuteLocalActivity(lctx, fn, args...).Get(ctx, out)
		var app *temporal.ApplicationError
		switch {
		case err == nil:
			return nil
		case temporal.IsCanceledError(err), errors.As(err, &app) && app.NonRetryable():
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		workflow.GetLogger(ctx).Warn("local attempts failed: retried as an activity", "agent", d.in.Agent, "error", err)
		if err := d.showStage(ctx); err != nil {
			return err
		}
	}
	return workflow.ExecuteActivity(actx, fn, args...).Get(ctx, out)
}

// passStage records stage in the status; runs since versionDeprovisionLocalSteps set the Stage search
// attribute to it only when the run waits in it (showStage), as a stage whose local attempts succeed
// lasts no longer than the workflow task.
func (d *deprovision) passStage(ctx workflow.Context, stage string) error {
	if d.local {
		d.status.Stage = stage
		return nil
	}
	return d.setStage(ctx, stage)
}

// showStage sets the Stage search attribute to the status's stage when it shows another.
func (d *deprovision) showStage(ctx workflow.Context) error {
	if d.stageSA == d.status.Stage {
		return nil
	}
	return d.setStage(ctx, d.status.Stage)
}

// step records a finished step.
func (d *deprovision) step(ctx workflow.Context, name, result, actor string) {
	d.steps = append(d.steps, DeprovisionStep{Name: name, Time: workflow.Now(ctx).UTC(), Result: result, Actor: actor})
}

func (d *deprovision) setStage(ctx workflow.Context, stage string) error {
	d.status.Stage = stage
	d.stageSA = stage
	return workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(stage))
}

func (d *deprovision) fail(ctx workflow.Context, err error) (DeprovisionResult, error) {
	d.status.Reason = err.Error()
	if serr := d.setStage(ctx, StageFailed); serr != nil {
		workflow.GetLogger(ctx).Error("cannot record the failed stage", "error", serr)
	}
	return DeprovisionResult{}, err
}

// run is the saga: suspend -> revoke every credential -> remove grants -> cleanup -> verify by trying
// -> retire -> sign-offs -> evidence.
func (d *deprovision) run(ctx workflow.Context) (DeprovisionResult, error) {
	in := &d.in
	if in.Trigger == "" {
		in.Trigger = TriggerRequest
	}
	if in.TriggerTime.IsZero() {
		in.TriggerTime = workflow.GetInfo(ctx).WorkflowStartTime.UTC()
	}
	switch {
	case in.NoSignOff:
	case len(in.SignOffSteps) == 0:
		d.signSteps = slices.Clone(DefaultSignOffSteps)
	default:
		d.signSteps = slices.Clone(in.SignOffSteps)
	}
	d.status.RequiredApprovals = d.signSteps
	d.local = workflow.GetVersion(ctx, versionDeprovisionLocalSteps, workflow.DefaultVersion, 1) >= 1
	d.oneTask = d.local && workflow.GetVersion(ctx, versionDeprovisionOneTask, workflow.DefaultVersion, 1) >= 1
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) { return d.status, nil }); err != nil {
		return DeprovisionResult{}, err
	}
	if err := d.handleSignOffs(ctx); err != nil {
		return DeprovisionResult{}, err
	}
	if d.oneTask && in.StartedWithIdentity {
		d.stageSA = StageRevoke // as the lifecycle service starts the run
	} else {
		if err := workflow.UpsertTypedSearchAttributes(ctx, identityAttributes(in.AgentID, in.Tenant, in.RiskTier, StageSuspend)...); err != nil {
			return DeprovisionResult{}, err
		}
		d.stageSA = StageSuspend
	}
	awaitCancel := d.cancelProvisioning(ctx)
	actx := workflow.WithActivityOptions(ctx, activityOptions)
	reason := in.Reason

	var suspended StepResult
	if err := d.exec(ctx, actx, &suspended, acts.SuspendForDeprovisioning, SuspendRequest{
		Agent: in.Agent, Reason: reason, Trigger: in.Trigger, ChangeRef: in.ChangeRef, RequestID: requestID(d.id, StageSuspend),
	}); err != nil {
		return d.fail(ctx, err)
	}
	d.step(ctx, StageSuspend, suspended.Result, "")

	v, err := d.revokeAndVerify(ctx, actx, reason)
	if err != nil {
		return d.fail(ctx, err)
	}
	if err := d.passStage(ctx, StageRetire); err != nil {
		return DeprovisionResult{}, err
	}
	if err := d.exec(ctx, actx, nil, acts.CompleteRetirement, CompleteRetirementRequest{
		Agent: in.Agent, VerifyTime: v.VerifyTime, RequestID: requestID(d.id, "retire"),
	}); err != nil {
		return d.fail(ctx, err)
	}
	d.step(ctx, StageRetire, "agent RETIRED in the registry", "")
	if err := d.exec(ctx, actx, nil, acts.RecordDeprovisioningVerified, DeprovisioningVerifiedRecord{
		Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, WorkflowID: d.id,
		VerifyTime: v.VerifyTime, Checks: v.Checks, CausationID: in.EventID, IdempotencyKey: requestID(d.id, "verified"),
	}); err != nil {
		return d.fail(ctx, err)
	}
	if d.local {
		awaitCancel()
	}
	if err := d.awaitSignOffs(ctx, actx); err != nil {
		return d.fail(ctx, err)
	}
	res := DeprovisionResult{Result: ResultRetired, VerifyTime: v.VerifyTime, Checks: v.Checks, Trigger: in.Trigger,
		TriggerTime: in.TriggerTime, Steps: d.steps, SignOffs: d.signOffs}
	completed := DeprovisioningCompletedRecord{
		Tenant: in.Tenant, Agent: in.Agent, AgentID: in.AgentID, WorkflowID: d.id, Trigger: in.Trigger, TriggerTime: in.TriggerTime,
		ChangeRef: in.ChangeRef, Steps: d.steps, Checks: v.Checks, CausationID: in.EventID, IdempotencyKey: requestID(d.id, "completed"),
	}
	if d.oneTask { // idempotent (the append's key): a local activity first, as the steps before it
		err = d.exec(ctx, actx, nil, acts.RecordDeprovisioningCompleted, completed)
	} else {
		err = workflow.ExecuteActivity(actx, acts.RecordDeprovisioningCompleted, completed).Get(ctx, nil)
	}
	if err != nil {
		return d.fail(ctx, err)
	}
	d.status.Result = ResultRetired
	if err := d.setStage(ctx, StageDone); err != nil {
		return DeprovisionResult{}, err
	}
	return res, nil
}

// revokeAndVerify revokes every credential, removes the grants, runs the cleanups and verifies by
// trying; a verification that still finds access revokes again (a client created concurrently with
// the retirement), at most maxRevokeRounds times.
func (d *deprovision) revokeAndVerify(ctx, actx workflow.Context, reason string) (Verification, error) {
	in := d.in
	for round := 1; ; round++ {
		suffix := ""
		if round > 1 { // new request ids, so the issuer does not take them for repeats of the first
			suffix = fmt.Sprintf("-%d", round)
		}
		if err := d.passStage(ctx, StageRevoke); err != nil {
			return Verification{}, err
		}
		var disabled DisableResult
		if err := d.exec(ctx, actx, &disabled, acts.DisableClient, DisableClientRequest{
			Tenant: in.Tenant, AgentID: in.AgentID, Reason: reason, RequestID: requestID(d.id, StageRevoke+suffix),
		}); err != nil {
			return Verification{}, err
		}
		var revoked StepResult
		if err := d.exec(ctx, actx, &revoked, acts.RevokeAgentTokens, RevokeAgentTokensRequest{
			Agent: in.Agent, Reason: reason, RequestID: requestID(d.id, "revoke-tokens"+suffix),
		}); err != nil {
			return Verification{}, err
		}
		client := "client " + ClientName(in.Tenant, in.AgentID) + " disabled"
		if !disabled.Found {
			client = "no client was ever issued; client id " + ClientName(in.Tenant, in.AgentID) + " tombstoned"
		}
		d.step(ctx, StageRevoke, client+"; "+revoked.Result, "")

		if err := d.passStage(ctx, StageRemoveRoles); err != nil {
			return Verification{}, err
		}
		var removed StepResult
		if err := d.exec(ctx, actx, &removed, acts.RemoveGrants, RemoveGrantsRequest{
			Tenant: in.Tenant, AgentID: in.AgentID,
		}); err != nil {
			return Verification{}, err
		}
		d.step(ctx, StageRemoveRoles, removed.Result, "")

		if round == 1 {
			if err := d.cleanup(ctx, actx); err != nil {
				return Verification{}, err
			}
		}

		if err := d.passStage(ctx, StageVerify); err != nil {
			return Verification{}, err
		}
		var v Verification
		err := d.exec(ctx, actx, &v, acts.VerifyDeprovisioned, VerifyRequest{Tenant: in.Tenant, AgentID: in.AgentID})
		if err == nil {
			d.step(ctx, StageVerify, strings.Join(v.Checks, "; "), "")
			d.checks = v.Checks
			return v, nil
		}
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != ErrStillActive || round == maxRevokeRounds {
			return Verification{}, err
		}
		d.step(ctx, StageVerify, "failed, revoking again: "+errorMessage(err), "")
		workflow.GetLogger(ctx).Warn("access remains after revoking; revoking again", "agent", in.Agent, "round", round)
		if err := d.showStage(ctx); err != nil {
			return Verification{}, err
		}
		if err := workflow.Sleep(ctx, time.Duration(round)*10*time.Second); err != nil {
			return Verification{}, err
		}
	}
}

// cleanup runs every configured cleanup. One that fails after its retries is compensated: recorded,
// notified, and the run fails with ErrCleanupFailed while the agent stays RETIRING (suspended from
// every token, its client disabled; nothing is ever re-enabled).
func (d *deprovision) cleanup(ctx, actx workflow.Context) error {
	if err := d.passStage(ctx, StageCleanup); err != nil {
		return err
	}
	var names []string
	if err := d.exec(ctx, actx, &names, acts.ListCleanups); err != nil {
		return err
	}
	if len(names) == 0 {
		d.step(ctx, StageCleanup, "no cleanup configured", "")
		return nil
	}
	// Cleanups reach other systems and may take long: regular activities, the stage shown.
	if err := d.showStage(ctx); err != nil {
		return err
	}
	cctx := workflow.WithActivityOptions(ctx, cleanupActivityOptions)
	for _, name := range names {
		var res StepResult
		err := workflow.ExecuteActivity(cctx, acts.RunCleanup, CleanupRequest{
			Name: name, Tenant: d.in.Tenant, Agent: d.in.Agent, AgentID: d.in.AgentID, Trigger: d.in.Trigger,
			ChangeRef: d.in.ChangeRef, RequestID: requestID(d.id, "cleanup:"+name),
		}).Get(ctx, &res)
		if err == nil {
			d.step(ctx, "cleanup:"+name, res.Result, "")
			continue
		}
		msg := fmt.Sprintf("cleanup %s failed after its retries: %s; the agent stays RETIRING with its client disabled and tokens revoked", name, errorMessage(err))
		d.step(ctx, "cleanup:"+name, "failed: "+errorMessage(err), "")
		d.status.Reason = msg
		if nerr := workflow.ExecuteActivity(actx, acts.NotifyDeprovisioning, DeprovisionNotice{
			Tenant: d.in.Tenant, Agent: d.in.Agent, To: []string{StepOwner, StepSecurity}, Kind: "cleanup_failed", Text: msg,
			Steps: d.steps, IdempotencyKey: requestID(d.id, "notify-cleanup-failed:"+name),
		}).Get(ctx, nil); nerr != nil {
			workflow.GetLogger(ctx).Error("cannot notify the failed cleanup", "cleanup", name, "error", nerr)
		}
		return temporal.NewNonRetryableApplicationError(msg, ErrCleanupFailed, err)
	}
	return nil
}

// awaitSignOffs waits for the sign-offs in order, reminding the signer every RemindEvery (at least
// MinSignOffRemindEvery, at least SlowSignOffRemindEvery after SignOffRemindersAtFullRate reminders)
// and, after EscalateAfter, security too. Reminders are counted, not recorded one by one: when the
// sign-off arrives one step (reminders:<step>) says how many were sent, to whom and when the last
// was; the notices carry no step list. The history of a waiting run thus grows by at most one
// reminder an hour for two days, then one a day.
func (d *deprovision) awaitSignOffs(ctx, actx workflow.Context) error {
	if len(d.signSteps) == 0 {
		d.step(ctx, StageSignOff, "no sign-off required for trigger "+d.in.Trigger, "")
		return nil
	}
	if err := d.setStage(ctx, StageSignOff); err != nil {
		return err
	}
	remind := d.in.RemindEvery
	switch {
	case remind <= 0:
		remind = DefaultSignOffRemindEvery
	case remind < MinSignOffRemindEvery:
		remind = MinSignOffRemindEvery
	}
	escalate := d.in.EscalateAfter
	if escalate <= 0 {
		escalate = DefaultSignOffEscalateAfter
	}
	for len(d.signOffs) < len(d.signSteps) {
		n := len(d.signOffs)
		step := d.signSteps[n]
		d.status.WaitingFor = "sign-off by " + step
		d.status.Step = step
		d.status.MayAct = StepRoles(step)
		waitStart := workflow.Now(ctx)
		reminded, failed := 0, 0
		var lastTo []string
		var last time.Time
		for len(d.signOffs) == n {
			wait := remind
			if reminded >= SignOffRemindersAtFullRate && wait < SlowSignOffRemindEvery {
				wait = SlowSignOffRemindEvery
			}
			ok, err := workflow.AwaitWithTimeout(ctx, wait, func() bool { return len(d.signOffs) > n })
			if err != nil {
				return err
			}
			if ok {
				break
			}
			to := []string{step}
			if workflow.Now(ctx).Sub(waitStart) >= escalate && step != StepSecurity {
				to = append(to, StepSecurity)
			}
			d.reminders++
			reminded++
			if err := workflow.ExecuteActivity(actx, acts.NotifyDeprovisioning, DeprovisionNotice{
				Tenant: d.in.Tenant, Agent: d.in.Agent, To: to, Kind: "sign_off_reminder",
				Text: fmt.Sprintf("the deprovisioning of %s waits for the %s sign-off since %s (reminder %d)",
					d.in.Agent, step, waitStart.UTC().Format(time.RFC3339), reminded),
				IdempotencyKey: requestID(d.id, fmt.Sprintf("remind-%d", d.reminders)),
			}).Get(ctx, nil); err != nil {
				failed++
				workflow.GetLogger(ctx).Error("cannot send a sign-off reminder", "step", step, "error", err)
			}
			lastTo, last = to, workflow.Now(ctx).UTC()
			d.status.WaitingFor = fmt.Sprintf("sign-off by %s (reminded %d times)", step, reminded)
		}
		if reminded > 0 {
			result := fmt.Sprintf("reminded %d times while waiting since %s, the last at %s to %s",
				reminded, waitStart.UTC().Format(time.RFC3339), last.Format(time.RFC3339), strings.Join(lastTo, ", "))
			if failed > 0 {
				result += fmt.Sprintf(" (%d reminders could not be delivered)", failed)
			}
			d.step(ctx, "reminders:"+step, result, "")
		}
		a := d.signOffs[n]
		d.step(ctx, "sign_off:"+a.Step, "signed off ("+a.Role+")"+commentSuffix(a.Comment), a.Approver)
	}
	d.status.WaitingFor, d.status.MayAct, d.status.Step = "", nil, ""
	return nil
}

func commentSuffix(c string) string {
	if c == "" {
		return ""
	}
	return ": " + c
}

// handleSignOffs installs the sign-off update (validated) and signal.
func (d *deprovision) handleSignOffs(ctx workflow.Context) error {
	signals := workflow.GetSignalChannel(ctx, SignOffSignal)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var a Approval
			if !signals.Receive(ctx, &a) {
				return
			}
			if _, err := d.take(ctx, a); err != nil {
				workflow.GetLogger(ctx).Warn("sign-off signal refused", "agent", d.in.Agent, "error", err)
			}
		}
	})
	return workflow.SetUpdateHandlerWithOptions(ctx, SignOffUpdate,
		func(ctx workflow.Context, a Approval) (Status, error) {
			if _, err := d.take(ctx, a); err != nil {
				return d.status, temporal.NewNonRetryableApplicationError(err.Error(), "APPROVAL_REFUSED", nil)
			}
			return d.status, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, a Approval) error {
			return d.precheck(a.normalize())
		}})
}

// precheck refuses, without verifying anything, a sign-off the run cannot take now.
func (d *deprovision) precheck(a Approval) error {
	switch {
	case d.status.Stage != StageSignOff:
		return fmt.Errorf("%w: the run is not waiting for a sign-off (stage %s)", ErrApprovalRefused, d.status.Stage)
	case len(d.signOffs) >= len(d.signSteps):
		return fmt.Errorf("%w: every sign-off has been taken", ErrApprovalRefused)
	}
	if err := tokenRefusal(a.Token, "a sign-off counts only with a SIGN_OFF approval token from the issuer"); err != nil {
		return err
	}
	if a.Decision != "" && a.Decision != DecisionSignOff {
		return refusedf("decision %q is not %q", a.Decision, DecisionSignOff)
	}
	return nil
}

// take verifies a sign-off and, when it counts, appends it; a refused one is recorded in the status.
func (d *deprovision) take(ctx workflow.Context, a Approval) (Approval, error) {
	a = a.normalize()
	var taken Approval
	err := d.decide(ctx, tokenDecision{
		Agent: d.in.Agent, Token: a.Token, Decision: DecisionSignOff,
		Precheck:      func() error { return d.precheck(a) },
		PrecheckAgain: true,
		Judge: func(v VerifiedApproval) error {
			var err error
			if taken, err = d.judge(ctx, a, v); err != nil {
				return err
			}
			d.signOffs = append(d.signOffs, taken)
			d.status.ApprovalsSoFar = append(d.status.ApprovalsSoFar, taken)
			return nil
		},
		Refuse: func(approver, _ string, err error) error { return d.refuse(ctx, approver, err) },
	})
	if err != nil {
		return Approval{}, err
	}
	return taken, nil
}

// judge applies the sign-off rules to a verified token: bound to this agent and run, used once, for
// decision SIGN_OFF and the step the run waits for, by the step's signer (the owner step by the
// agent's owner or sponsor, the security step by a security-approver), who signed no earlier step.
func (d *deprovision) judge(ctx workflow.Context, a Approval, v VerifiedApproval) (Approval, error) {
	refused := func(format string, args ...any) (Approval, error) {
		return Approval{}, fmt.Errorf("%w: "+format, append([]any{ErrApprovalRefused}, args...)...)
	}
	if err := d.bind(ctx, d.in.Agent, "this run", v); err != nil {
		return Approval{}, err
	}
	step := d.signSteps[len(d.signOffs)]
	if err := callerRefusal(a.SubmittedBy, v); err != nil {
		return Approval{}, err
	}
	switch {
	case v.Decision != DecisionSignOff:
		return refused("the approval token is for %q, a deprovisioning takes %q", v.Decision, DecisionSignOff)
	case v.Step != step:
		return refused("the approval token is for the %s step, the run waits for the %s sign-off", v.Step, step)
	}
	for _, s := range d.signOffs {
		if s.Approver == v.Subject {
			return refused("%s signed the %s step already; each sign-off needs another person", v.Subject, s.Step)
		}
	}
	role, err := stepRole(step, VerifiedApproval{Subject: v.Subject, Roles: v.Roles, Owner: v.Owner, Sponsor: v.Sponsor, Decision: DecisionApprove})
	if err != nil {
		return Approval{}, err
	}
	return Approval{Approver: v.Subject, Role: role, Decision: DecisionSignOff, Comment: a.Comment, Step: step,
		TokenID: v.TokenID, Time: workflow.Now(ctx).UTC()}, nil
}

// refuse records a refused sign-off in the status and returns err.
func (d *deprovision) refuse(ctx workflow.Context, approver string, err error) error {
	step := ""
	if n := len(d.signOffs); n < len(d.signSteps) {
		step = d.signSteps[n]
	}
	keepRefusal(&d.status.Refused, &d.status.RefusedCount, Refusal{Time: workflow.Now(ctx), Approver: approver, Step: step, Decision: DecisionSignOff, Reason: err.Error()})
	workflow.GetLogger(ctx).Warn("sign-off refused", "agent", d.in.Agent, "approver", approver, "step", step, "error", err)
	return err
}
