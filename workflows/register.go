package workflows

import (
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// RegisterWorkflows registers ProvisionWorkflow and DeprovisionWorkflow under their names (also for
// replayers).
func RegisterWorkflows(r worker.WorkflowRegistry) {
	r.RegisterWorkflowWithOptions(ProvisionWorkflow, workflow.RegisterOptions{Name: ProvisionWorkflowName})
	r.RegisterWorkflowWithOptions(DeprovisionWorkflow, workflow.RegisterOptions{Name: DeprovisionWorkflowName})
	r.RegisterWorkflowWithOptions(IncidentWorkflow, workflow.RegisterOptions{Name: IncidentWorkflowName})
	r.RegisterWorkflowWithOptions(TTLWorkflow, workflow.RegisterOptions{Name: TTLWorkflowName})
	r.RegisterWorkflowWithOptions(RotationWorkflow, workflow.RegisterOptions{Name: RotationWorkflowName})
	r.RegisterWorkflowWithOptions(KeyRemovalWorkflow, workflow.RegisterOptions{Name: KeyRemovalWorkflowName})
	r.RegisterWorkflowWithOptions(SweepWorkflow, workflow.RegisterOptions{Name: SweepWorkflowName})
	r.RegisterWorkflowWithOptions(RotationSweepWorkflow, workflow.RegisterOptions{Name: RotationSweepWorkflowName})
	r.RegisterWorkflowWithOptions(ReviewWorkflow, workflow.RegisterOptions{Name: ReviewWorkflowName})
	r.RegisterWorkflowWithOptions(ReviewCampaignWorkflow, workflow.RegisterOptions{Name: ReviewCampaignWorkflowName})
}

// Register registers the workflows and a's methods as activities on a worker.
func Register(r worker.Registry, a *Activities) {
	RegisterWorkflows(r)
	r.RegisterActivity(a)
}
