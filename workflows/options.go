package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Defaults of the approval stage.
const (
	// DefaultEscalateAfter is how long an approval may wait before the run escalates.
	DefaultEscalateAfter = 48 * time.Hour
	// DefaultApprovalDeadline is how long an approval may wait before the request is rejected as expired.
	DefaultApprovalDeadline = 7 * 24 * time.Hour
)

// activityOptions: every call is short; failures a retry can fix are retried with capped exponential
// backoff for as long as the run lives.
var activityOptions = workflow.ActivityOptions{
	StartToCloseTimeout: 30 * time.Second,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    time.Minute,
	},
}

// activityOptionsWaitingForCancel are activityOptions for a step whose effect must be known before a
// cancelled run goes on: cancellation waits for the activity to end.
var activityOptionsWaitingForCancel = func() workflow.ActivityOptions {
	o := activityOptions
	o.WaitForCancellation = true
	return o
}()

// undoActivityOptions bound the steps that settle a provisioning run that is failing or being
// cancelled (rejecting the agent, disabling its client): each is retried for an hour at most. A
// client left behind then is disabled by the reconciler once its agent is neither ACTIVE nor PENDING
// (the run rejects the agent before it disables the client) or by the deprovisioning run of a
// retiring agent. The reconciler never disables the client of a PENDING agent: if rejecting failed
// too, the failed run is started again (within the reconciler's re-drive limit) and reuses the client.
var undoActivityOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    30 * time.Second,
	ScheduleToCloseTimeout: time.Hour,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    time.Minute,
	},
}

// acts is the receiver for activity references; the worker binds the real Activities.
var acts *Activities

// requestID derives the idempotency key of one step of a run.
func requestID(workflowID, step string) string { return workflowID + "/" + step }
