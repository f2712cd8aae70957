package workflows

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/workflow"
)

// RunCanceller requests the cancellation of a workflow run; client.Client is one.
type RunCanceller interface {
	// CancelWorkflow requests the cancellation of the run (runID empty: the current run of workflowID).
	CancelWorkflow(ctx context.Context, workflowID, runID string) error
}

// CancelProvisioningRequest asks to cancel an agent's provisioning run.
type CancelProvisioningRequest struct {
	// Tenant of the agent.
	Tenant string
	// AgentID is the agent id.
	AgentID string
}

// CancelProvisioning requests the cancellation of the agent's provisioning run (the current run of
// ProvisionWorkflowID) through Activities.Runs, or the worker's own Temporal client when Runs is nil.
// A run that has ended, or none at all, is nothing to cancel. Idempotent: a run asked again changes
// nothing.
func (a *Activities) CancelProvisioning(ctx context.Context, in CancelProvisioningRequest) (StepResult, error) {
	runs := a.Runs
	if runs == nil {
		runs = activity.GetClient(ctx)
	}
	id := ProvisionWorkflowID(in.Tenant, in.AgentID)
	err := runs.CancelWorkflow(ctx, id, "")
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
		return StepResult{Result: "provisioning run " + id + " asked to cancel"}, nil
	case errors.As(err, &nf):
		return StepResult{Result: "no provisioning run in progress"}, nil
	}
	return StepResult{}, fmt.Errorf("cancel provisioning run %s: %w", id, err)
}

// cancelProvisioning asks a provisioning run still in progress to cancel: a run that still waits must
// not activate the agent behind the deprovisioning's back (the registry refuses to activate a retiring
// agent, and verification revokes again a client created meanwhile). Since versionDeprovisionOneTask
// the request is a local activity (CancelProvisioning) started with the first steps, whose answer is
// awaited after the verification: it adds no workflow task. Should its local attempts fail, the run
// sends the request as before (RequestCancelExternalWorkflow) and waits for its answer. Earlier runs
// send that request with their first workflow task; with local steps they await it after the
// verification, without them at once. The returned func waits for the answer.
func (d *deprovision) cancelProvisioning(ctx workflow.Context) func() {
	external := func() func() {
		f := workflow.RequestCancelExternalWorkflow(ctx, ProvisionWorkflowID(d.in.Tenant, d.in.AgentID), "")
		return func() {
			if err := f.Get(ctx, nil); err != nil {
				workflow.GetLogger(ctx).Debug("no provisioning run to cancel", "error", err)
			}
		}
	}
	if !d.oneTask {
		await := external()
		if !d.local {
			await()
		}
		return await
	}
	lctx := workflow.WithLocalActivityOptions(ctx, deprovisionLocalOptions)
	f := workflow.ExecuteLocalActivity(lctx, acts.CancelProvisioning, CancelProvisioningRequest{Tenant: d.in.Tenant, AgentID: d.in.AgentID})
	return func() {
		if err := f.Get(ctx, nil); err != nil && ctx.Err() == nil {
			workflow.GetLogger(ctx).Warn("local attempts to cancel the provisioning run failed: requested by the run", "agent", d.in.Agent, "error", err)
			external()()
		}
	}
}
