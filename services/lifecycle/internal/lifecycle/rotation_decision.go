package lifecycle

import (
	"context"
	"errors"
	"strings"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/workflows"
)

// RotationDecision is the owner's decision on a rotation's new key submitted through the API.
type RotationDecision struct {
	// Agent is the resource name.
	Agent string
	// Thumbprint names the new key (and so the rotation run).
	Thumbprint string
	// Token is the caller's approval token for the run, step owner and the decision. Required.
	Token string
	// Comment is recorded with the decision.
	Comment string
	// RequestID identifies the submission; a repeat with the same id is answered like the first.
	RequestID string
}

// rotationRunID checks agent and thumbprint and returns the rotation run's workflow id.
func rotationRunID(agent, thumbprint string) (string, error) {
	tenant, agentID, err := ParseAgent("agent", agent)
	if err != nil {
		return "", err
	}
	if thumbprint == "" || len(thumbprint) > 64 || strings.Trim(thumbprint, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return "", errs.InvalidArgument("thumbprint", "must be the new key's RFC 7638 thumbprint (base64url)")
	}
	return workflows.RotationWorkflowID(tenant, agentID, thumbprint), nil
}

// DecideRotation sends p's decision on the new key to the agent's rotation run and returns the run
// after it. A run that is not waiting for the owner, or a decision the run refuses (a bad token, a
// token for another step, run or person), is FailedPrecondition (APPROVAL_REFUSED or
// NOT_WAITING_FOR_APPROVAL) and changes nothing.
func (s *Service) DecideRotation(ctx context.Context, p *authn.Principal, d RotationDecision) (Run, error) {
	id, err := rotationRunID(d.Agent, d.Thumbprint)
	if err != nil {
		return Run{}, err
	}
	updateID, err := callerUpdateID(p, d.RequestID)
	if err != nil {
		return Run{}, err
	}
	if d.Token == "" {
		return Run{}, errs.InvalidArgument("approval_token", "is required: get an APPROVE or REJECT approval token for step owner with IssuerService.IssueApprovalToken")
	}
	if err := checkDecider(ctx, s.registry, p, d.Agent); err != nil {
		return Run{}, err
	}
	var st workflows.RotationStatus
	err = updateRun(ctx, s.temporal, updateID, id, workflows.DecideUpdate,
		workflows.RotationDecision{Token: d.Token, Comment: d.Comment, SubmittedBy: p.ID}, &st)
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
	case workflows.IsApprovalRefused(err):
		return Run{}, errs.FailedPrecondition("APPROVAL_REFUSED", approvalMessage(err))
	case errors.As(err, &nf):
		return Run{}, errs.FailedPrecondition("NOT_WAITING_FOR_APPROVAL", "the key has no rotation run waiting for the owner's approval")
	default:
		return Run{}, temporalError("decide rotation", err)
	}
	r, found, err := s.GetRotation(ctx, d.Agent, d.Thumbprint)
	if err != nil || !found {
		return Run{WorkflowID: id, Stage: st.Stage, WaitingFor: st.WaitingFor, Result: st.Result}, err
	}
	return r, nil
}

// GetRotation reads the rotation run of the agent's key: its run id, stage and the approval step it
// waits for; found is false when there is none.
func (s *Service) GetRotation(ctx context.Context, agent, thumbprint string) (r Run, found bool, err error) {
	id, err := rotationRunID(agent, thumbprint)
	if err != nil {
		return Run{}, false, err
	}
	resp, err := s.temporal.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return Run{}, false, nil
	}
	if err != nil {
		return Run{}, false, temporalError("describe rotation", err)
	}
	info := resp.GetWorkflowExecutionInfo()
	r = Run{WorkflowID: id, RunID: info.GetExecution().GetRunId(), StartTime: info.GetStartTime().AsTime()}
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		r.Completed = true
		if info.GetCloseTime() != nil {
			r.CloseTime = info.GetCloseTime().AsTime()
		}
	}
	v, err := s.temporal.QueryWorkflow(ctx, id, r.RunID, workflows.StatusQuery)
	if err != nil {
		if r.Completed {
			return r, true, nil // a closed run may no longer answer queries
		}
		return Run{}, false, temporalError("query rotation status", err)
	}
	var st workflows.RotationStatus
	if err := v.Get(&st); err != nil {
		return Run{}, false, errs.Internal(errors.Join(errors.New("decode rotation status"), err))
	}
	r.Stage, r.WaitingFor, r.ApprovalStep, r.Result = st.Stage, st.WaitingFor, st.Step, st.Result
	return r, true, nil
}
