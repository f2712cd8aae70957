// Package lifecycle is the core of the lifecycle service: it starts the provisioning and deprovisioning
// workflows when the registry records agent events, shows an agent's runs, and forwards approvals to the
// provisioning run. The workflows themselves live in the workflows module.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/readmodel"
	"github.com/agentid/agentid/workflows"
)

// Temporal is the part of the Temporal client the service uses (client.Client implements it).
type Temporal interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
	GetWorkflow(ctx context.Context, workflowID, runID string) client.WorkflowRun
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...any) (converter.EncodedValue, error)
	UpdateWorkflow(ctx context.Context, options client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)
}

// Config configures the Service.
type Config struct {
	// Temporal is the Temporal client. Required.
	Temporal Temporal
	// TaskQueue is where the workflows run (default workflows.TaskQueue).
	TaskQueue string
	// Registry, if set, is asked for an agent's risk tier when a retirement event does not carry it.
	Registry registryv1.RegistryServiceClient
	// Model, if set, is the lifecycle read model: it tells agents without a run yet from unknown ones
	// and keeps the outcomes of runs Temporal no longer knows.
	Model *readmodel.Model
	// StartTimeout bounds one attempt to start a run (default DefaultStartTimeout): while Temporal
	// is unreachable an attempt fails after it and the event is redelivered after the back-off.
	StartTimeout time.Duration
	// Logger logs; default slog.Default().
	Logger *slog.Logger
	// Deprovision configures the sign-offs of deprovisioning runs.
	Deprovision DeprovisionPolicy
	// Approvals configures the reminders and escalation of provisioning approvals per tenant.
	Approvals ApprovalEscalation
	// RotationOverlap is how long both keys of an agent credential rotation work (default
	// workflows.DefaultRotationOverlap).
	RotationOverlap time.Duration
	// OrphanedAction is what an agent.orphaned event leads to, as the orphan sweep's action:
	// workflows.SweepActionReview (default) or workflows.SweepActionDeprovision (orphans.go).
	OrphanedAction string
}

// DefaultStartTimeout bounds one attempt to start a workflow run.
const DefaultStartTimeout = 10 * time.Second

// Service starts, shows and steers the lifecycle workflows.
type Service struct {
	temporal  Temporal
	taskQueue string
	registry  registryv1.RegistryServiceClient
	model     *readmodel.Model
	startWait time.Duration
	log       *slog.Logger
	deprov    DeprovisionPolicy
	approvals ApprovalEscalation
	overlap   time.Duration // of agent key rotations; 0 is the workflow's default
	// orphanedAction is Config.OrphanedAction.
	orphanedAction string
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Temporal == nil {
		return nil, errors.New("lifecycle: Config.Temporal is required")
	}
	if cfg.TaskQueue == "" {
		cfg.TaskQueue = workflows.TaskQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if err := cfg.Deprovision.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Approvals.Validate(); err != nil {
		return nil, err
	}
	switch cfg.OrphanedAction {
	case "":
		cfg.OrphanedAction = workflows.SweepActionReview
	case workflows.SweepActionReview, workflows.SweepActionDeprovision:
	default:
		return nil, fmt.Errorf("lifecycle: OrphanedAction %q is neither %s nor %s", cfg.OrphanedAction, workflows.SweepActionReview, workflows.SweepActionDeprovision)
	}
	return &Service{temporal: cfg.Temporal, taskQueue: cfg.TaskQueue, registry: cfg.Registry, model: cfg.Model,
		startWait: cfg.StartTimeout, log: cfg.Logger, deprov: cfg.Deprovision, approvals: cfg.Approvals, overlap: cfg.RotationOverlap,
		orphanedAction: cfg.OrphanedAction}, nil
}
