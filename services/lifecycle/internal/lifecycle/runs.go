package lifecycle

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// Kind is the kind of a lifecycle run.
type Kind int

// The kinds of run.
const (
	KindProvision Kind = iota + 1
	KindDeprovision
)

// Run describes one lifecycle workflow run.
type Run struct {
	// WorkflowID is the run's deterministic workflow id.
	WorkflowID string
	// Kind is provisioning or deprovisioning.
	Kind Kind
	// Stage is the current (or last) stage.
	Stage string
	// WaitingFor says what a running run waits for, if anything.
	WaitingFor string
	// Completed is true once the run has closed.
	Completed bool
	// StartTime is when the run started.
	StartTime time.Time
	// CloseTime is when the run closed, if it did.
	CloseTime time.Time
	// Result summarises how a closed run ended.
	Result string
	// RunID is the Temporal run id (approval tokens are bound to it).
	RunID string
	// ApprovalStep is the approval step a running provisioning run waits for, if any.
	ApprovalStep string
}

// ParseAgent checks an agent resource name and splits it; the error names field.
func ParseAgent(field, name string) (tenant, agentID string, err error) {
	tenant, agentID, ok := workflows.ParseAgentName(name)
	if !ok || !authn.ValidTenant(tenant) {
		return "", "", errs.InvalidArgument(field, "must be tenants/{tenant}/agents/{agent}")
	}
	return tenant, agentID, nil
}

// StageQueued is the stage shown for a run the agent's state calls for that has not started yet (the
// event → workflow hand-off is asynchronous).
const StageQueued = "queued"

// RetryQueuedAfter is the retry hint of an approval for a run that has not started yet.
const RetryQueuedAfter = 2 * time.Second

// AgentRuns returns the provisioning and deprovisioning runs of an agent, provisioning first. A run
// Temporal no longer knows (retention passed) is shown from its recorded outcome (LIFECYCLE events);
// a run the agent's state calls for that has not started yet is shown with stage StageQueued. NotFound
// when the agent is unknown or has no run at all.
func (s *Service) AgentRuns(ctx context.Context, agent string) ([]Run, error) {
	tenant, agentID, err := ParseAgent("agent", agent)
	if err != nil {
		return nil, err
	}
	var runs []Run
	var found [3]bool
	for _, k := range []Kind{KindProvision, KindDeprovision} {
		r, ok, err := s.describe(ctx, k, workflowID(k, tenant, agentID))
		if err != nil {
			return nil, err
		}
		if !ok {
			r, ok = s.recorded(k, tenant, agentID)
		}
		if ok {
			runs = append(runs, r)
			found[k] = true
		}
	}
	if !found[KindProvision] || !found[KindDeprovision] {
		state, known, err := s.agentState(ctx, tenant, agentID)
		if err != nil && len(runs) == 0 {
			return nil, err
		}
		switch {
		case known && state == registryv1.AgentState_AGENT_STATE_PENDING && !found[KindProvision]:
			runs = append([]Run{queued(KindProvision, tenant, agentID)}, runs...)
		case known && state == registryv1.AgentState_AGENT_STATE_RETIRING && !found[KindDeprovision]:
			runs = append(runs, queued(KindDeprovision, tenant, agentID))
		}
	}
	if len(runs) == 0 {
		return nil, errs.NotFound("WORKFLOWS_NOT_FOUND", "the agent has no lifecycle workflows").WithMetadata("agent", agent)
	}
	return runs, nil
}

// queued is a run that has not started yet.
func queued(k Kind, tenant, agentID string) Run {
	what := "the provisioning run to start"
	if k == KindDeprovision {
		what = "the deprovisioning run to start"
	}
	return Run{WorkflowID: workflowID(k, tenant, agentID), Kind: k, Stage: StageQueued, WaitingFor: what}
}

// recorded is a closed run as its LIFECYCLE event recorded it, when the read model has one.
func (s *Service) recorded(k Kind, tenant, agentID string) (Run, bool) {
	if s.model == nil {
		return Run{}, false
	}
	a, ok := s.model.Agent(tenant, agentID)
	if !ok {
		return Run{}, false
	}
	o := a.Provisioned
	if k == KindDeprovision {
		o = a.Deprovisioned
	}
	if o == nil {
		return Run{}, false
	}
	id := o.WorkflowID
	if id == "" {
		id = workflowID(k, tenant, agentID)
	}
	return Run{WorkflowID: id, Kind: k, Stage: workflows.StageDone, Completed: true, CloseTime: o.Time, Result: o.Result}, true
}

// agentState is the agent's state from the read model, or from the registry when the model does not
// show the agent yet; known is false for an agent neither knows.
func (s *Service) agentState(ctx context.Context, tenant, agentID string) (state registryv1.AgentState, known bool, err error) {
	if s.model != nil {
		if a, ok := s.model.Agent(tenant, agentID); ok && a.State != registryv1.AgentState_AGENT_STATE_UNSPECIFIED {
			return a.State, true, nil
		}
	}
	if s.registry == nil {
		return 0, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, riskTierLookupTimeout)
	defer cancel()
	resp, err := s.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: workflows.AgentName(tenant, agentID)})
	switch {
	case errs.Is(err, errs.KindNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, errs.Unavailable("REGISTRY_UNAVAILABLE", "the agent's state cannot be read now, retry later", err).
			WithMetadata("retry_after", RetryQueuedAfter.String())
	}
	return resp.GetAgent().GetState(), true, nil
}

func workflowID(k Kind, tenant, agentID string) string {
	if k == KindDeprovision {
		return workflows.DeprovisionWorkflowID(tenant, agentID)
	}
	return workflows.ProvisionWorkflowID(tenant, agentID)
}

// describe reads one run: its execution info, and the status query while it runs.
func (s *Service) describe(ctx context.Context, k Kind, id string) (Run, bool, error) {
	resp, err := s.temporal.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return Run{}, false, nil
	}
	if err != nil {
		return Run{}, false, temporalError("describe workflow", err)
	}
	info := resp.GetWorkflowExecutionInfo()
	r := Run{WorkflowID: id, Kind: k, StartTime: info.GetStartTime().AsTime()}
	if p := info.GetSearchAttributes().GetIndexedFields()[workflows.StageKey.GetName()]; p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &r.Stage)
	}
	runID := info.GetExecution().GetRunId()
	r.RunID = runID
	if info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		if st, err := s.status(ctx, id, runID); err == nil {
			r.Stage, r.WaitingFor = st.Stage, st.WaitingFor
			if n := len(st.ApprovalsSoFar); (st.Stage == workflows.StageApproval || st.Stage == workflows.StageApprovalEscalated) && n < len(st.RequiredApprovals) {
				r.ApprovalStep = st.RequiredApprovals[n]
			}
			if st.Stage == workflows.StageSignOff && st.Step != "" {
				r.ApprovalStep = st.Step
			}
		} else {
			s.log.DebugContext(ctx, "status query failed; showing the search attribute", "workflow_id", id, "error", err)
		}
		return r, true, nil
	}
	r.Completed = true
	if info.GetCloseTime() != nil {
		r.CloseTime = info.GetCloseTime().AsTime()
	}
	r.Result = s.result(ctx, info.GetStatus(), id, runID)
	return r, true, nil
}

// result summarises a closed run.
func (s *Service) result(ctx context.Context, st enumspb.WorkflowExecutionStatus, id, runID string) string {
	switch st {
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		var res struct{ Result string }
		if err := s.temporal.GetWorkflow(ctx, id, runID).Get(ctx, &res); err != nil {
			return "completed"
		}
		return res.Result
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		err := s.temporal.GetWorkflow(ctx, id, runID).Get(ctx, nil)
		var app *temporal.ApplicationError
		if errors.As(err, &app) {
			return "failed: " + app.Message()
		}
		return "failed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "canceled"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "timed out"
	default:
		return strings.ToLower(strings.TrimPrefix(st.String(), "WorkflowExecutionStatus"))
	}
}

// queryTimeout bounds a status query, which waits for a worker to answer.
const queryTimeout = 10 * time.Second

func (s *Service) status(ctx context.Context, id, runID string) (workflows.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	v, err := s.temporal.QueryWorkflow(ctx, id, runID, workflows.StatusQuery)
	if err != nil {
		return workflows.Status{}, err
	}
	var st workflows.Status
	return st, v.Get(&st)
}

// Approval is one approver's decision submitted through the API.
type Approval struct {
	// Agent is the resource name.
	Agent string
	// Approve is true to approve, false to reject.
	Approve bool
	// Comment is recorded with the approval.
	Comment string
	// Token is the caller's approval token (IssuerService.IssueApprovalToken) for the run, step and
	// decision. Required.
	Token string
	// RequestID identifies the submission; a repeat with the same id is answered like the first. An
	// empty one gets a fresh id, so the submission is never taken for a repeat.
	RequestID string
}

// SubmitApproval records p's decision on the agent's provisioning run, in the role p holds for the step
// the run waits for (that role itself, or one of workflows.AnyStepRoles), and returns the run after it.
// A run that is not waiting for approvals, or a decision the run refuses, is FailedPrecondition.
func (s *Service) SubmitApproval(ctx context.Context, p *authn.Principal, a Approval) (Run, error) {
	tenant, agentID, err := ParseAgent("agent", a.Agent)
	if err != nil {
		return Run{}, err
	}
	updateID, err := callerUpdateID(p, a.RequestID)
	if err != nil {
		return Run{}, err
	}
	if err := checkDecider(ctx, s.registry, p, a.Agent); err != nil {
		return Run{}, err
	}
	id := workflows.ProvisionWorkflowID(tenant, agentID)
	st, err := s.status(ctx, id, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return Run{}, s.noProvisioningRun(ctx, tenant, agentID, a.Agent)
	case err != nil:
		return Run{}, temporalError("query workflow", err)
	}
	if st.Stage != workflows.StageApproval && st.Stage != workflows.StageApprovalEscalated {
		return Run{}, errs.FailedPrecondition("NOT_WAITING_FOR_APPROVAL", "the provisioning workflow is not waiting for approvals (stage "+st.Stage+")")
	}
	step := ""
	if n := len(st.ApprovalsSoFar); n < len(st.RequiredApprovals) {
		step = st.RequiredApprovals[n]
	}
	if a.Token == "" {
		return Run{}, errs.InvalidArgument("approval_token", "is required: get one with IssuerService.IssueApprovalToken (agentctl approvals token)")
	}
	decision := workflows.DecisionReject
	if a.Approve {
		decision = workflows.DecisionApprove
	}
	h, err := s.temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		UpdateID:   updateID,
		WorkflowID: id,
		UpdateName: workflows.ApproveUpdate,
		Args: []any{workflows.Approval{Approver: p.ID, Role: actingRole(p, step), Decision: decision, Comment: a.Comment,
			Token: a.Token, SubmittedBy: p.ID}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	if err != nil {
		if workflows.IsApprovalRefused(err) {
			return Run{}, errs.FailedPrecondition("APPROVAL_REFUSED", approvalMessage(err))
		}
		if errors.As(err, &nf) {
			return Run{}, errs.FailedPrecondition("NOT_WAITING_FOR_APPROVAL", "the provisioning workflow has finished")
		}
		return Run{}, temporalError("submit approval", err)
	}
	r, _, err := s.describe(ctx, KindProvision, id)
	return r, err
}

// noProvisioningRun is the answer to an approval for an agent Temporal shows no provisioning run of:
// Unavailable with a retry hint while the run has not started yet, FailedPrecondition once it has
// finished (its outcome is recorded) or when the agent is past provisioning, NotFound for an unknown
// agent.
func (s *Service) noProvisioningRun(ctx context.Context, tenant, agentID, agent string) error {
	if _, done := s.recorded(KindProvision, tenant, agentID); done {
		return errs.FailedPrecondition("NOT_WAITING_FOR_APPROVAL", "the provisioning workflow has finished")
	}
	state, known, err := s.agentState(ctx, tenant, agentID)
	switch {
	case err != nil:
		return err
	case !known:
		return errs.NotFound("WORKFLOW_NOT_FOUND", "the agent has no provisioning workflow").WithMetadata("agent", agent)
	case state == registryv1.AgentState_AGENT_STATE_PENDING:
		return errs.Unavailable("PROVISIONING_NOT_STARTED",
			"the provisioning workflow has not started yet, retry in "+RetryQueuedAfter.String(), nil).
			WithMetadata("agent", agent).WithMetadata("retry_after", RetryQueuedAfter.String()).
			WithRetryAfter(RetryQueuedAfter)
	default:
		return errs.FailedPrecondition("NOT_WAITING_FOR_APPROVAL",
			"the agent is "+strings.TrimPrefix(state.String(), "AGENT_STATE_")+": there is nothing to approve")
	}
}

// actingRole is the role p acts in for a step waiting for role step: the step's role when p holds it,
// otherwise the first of workflows.AnyStepRoles p holds (the workflow refuses any other).
func actingRole(p *authn.Principal, step string) string {
	if step != "" && p.HasRole(authn.Role(step)) {
		return step
	}
	for _, r := range workflows.AnyStepRoles {
		if p.HasRole(authn.Role(r)) {
			return r
		}
	}
	if len(p.Roles) > 0 {
		return string(p.Roles[0])
	}
	return ""
}

// approvalMessage is the workflow's reason for refusing an approval, without the error's decoration.
func approvalMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Message()
	}
	return "approval refused"
}

// temporalError maps a Temporal client error: an unreachable server is Unavailable, anything else
// Internal (the cause is logged by the gRPC layer, never returned).
func temporalError(op string, err error) error {
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	if errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.Is(err, context.DeadlineExceeded) {
		return errs.Unavailable("TEMPORAL_UNAVAILABLE", "the workflow engine is unavailable, retry later", err)
	}
	return errs.Internal(errors.Join(errors.New(op), err))
}

// checkRequestID validates an optional idempotency key (1 to 128 printable ASCII characters without
// spaces) and makes up a fresh one when it is empty.
func checkRequestID(id string) (string, error) {
	if id == "" {
		return "approval-" + uuid.NewString(), nil
	}
	if len(id) > 128 {
		return "", errs.InvalidArgument("request_id", "must be at most 128 characters")
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return "", errs.InvalidArgument("request_id", "must be printable ASCII without spaces")
		}
	}
	return id, nil
}
