package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/workflows"
)

// DefaultReviewCron is when the quarterly access review campaign starts: 06:00 UTC on the first day
// of January, April, July and October.
const DefaultReviewCron = "0 6 1 1,4,7,10 *"

// EnsureReviewSchedule creates the Temporal Schedule workflows.ReviewScheduleID that starts an
// access review campaign over every tenant on cron (default DefaultReviewCron), or updates it; an
// empty cron "-" deletes it. Calling it again with the same arguments changes nothing.
func EnsureReviewSchedule(ctx context.Context, sc client.ScheduleClient, taskQueue, cron string, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	id := workflows.ReviewScheduleID
	if cron == "-" {
		err := sc.GetHandle(ctx, id).Delete(ctx)
		var nf *serviceerror.NotFound
		if err != nil && !errors.As(err, &nf) {
			return fmt.Errorf("delete schedule %s: %w", id, err)
		}
		return nil
	}
	if cron == "" {
		cron = DefaultReviewCron
	}
	spec := client.ScheduleSpec{CronExpressions: []string{cron}}
	action := &client.ScheduleWorkflowAction{
		ID: id, Workflow: workflows.ReviewCampaignWorkflowName, Args: []any{workflows.ReviewCampaignInput{}}, TaskQueue: taskQueue,
		WorkflowExecutionTimeout: sweepRunTimeout,
	}
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: id, Spec: spec, Action: action, Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Note: "agentid access review campaign (docs/reviews.md)",
	})
	switch {
	case err == nil:
		log.InfoContext(ctx, "review schedule created", "schedule_id", id, "cron", cron)
		return nil
	case !errors.Is(err, temporal.ErrScheduleAlreadyRunning):
		return fmt.Errorf("create schedule %s: %w", id, err)
	}
	err = sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(u client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			sched := u.Description.Schedule
			sched.Spec, sched.Action = &spec, action
			return &client.ScheduleUpdate{Schedule: &sched}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("update schedule %s: %w", id, err)
	}
	return nil
}

// Reviews lists, starts and decides access reviews.
type Reviews struct {
	temporal  IncidentTemporal
	taskQueue string
	now       func() time.Time
}

// NewReviews returns Reviews using t (the lifecycle service's Temporal client) and its task queue.
func NewReviews(t IncidentTemporal, taskQueue string) (*Reviews, error) {
	if t == nil {
		return nil, errors.New("lifecycle: NewReviews needs a Temporal client")
	}
	if taskQueue == "" {
		taskQueue = workflows.TaskQueue
	}
	return &Reviews{temporal: t, taskQueue: taskQueue, now: time.Now}, nil
}

// Review is one review run as the API shows it.
type Review struct {
	// Run is the run.
	Run Run
	// Agent and Campaign name the review.
	Agent, Campaign string
	// Status is the run's status (running) or what its result says (closed).
	Status workflows.ReviewStatus
}

// StartCampaign starts a campaign in tenant now: campaign id od-<hash of the request id> (a retry
// with the same request id starts nothing new) or od-<time> without one.
func (r *Reviews) StartCampaign(ctx context.Context, tenant string, usageDays, answerDays int, requestID string) (campaign, workflowID string, err error) {
	switch {
	case !authn.ValidTenant(tenant):
		return "", "", errs.InvalidArgument("parent", "must be tenants/{tenant}")
	case usageDays < 0 || usageDays > 400:
		return "", "", errs.InvalidArgument("usage_days", "must be between 1 and 400 (0: 90)")
	case answerDays < 0 || answerDays > 90:
		return "", "", errs.InvalidArgument("answer_days", "must be between 1 and 90 (0: 14)")
	case len(requestID) > 200:
		return "", "", errs.InvalidArgument("request_id", "must be at most 200 characters")
	}
	if requestID != "" {
		sum := sha256.Sum256([]byte(tenant + "\x00" + requestID))
		campaign = "od-" + hex.EncodeToString(sum[:8])
	} else {
		campaign = "od-" + r.now().UTC().Format("20060102T150405Z")
	}
	workflowID = workflows.ReviewCampaignWorkflowID(tenant, campaign)
	in := workflows.ReviewCampaignInput{Campaign: campaign, Tenants: []string{tenant}, UsageDays: usageDays,
		AnswerFor: time.Duration(answerDays) * 24 * time.Hour}
	_, err = r.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflowID, TaskQueue: r.taskQueue, WorkflowExecutionTimeout: sweepRunTimeout,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.ReviewCampaignWorkflowName, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if err != nil && !errors.As(err, &started) {
		return "", "", temporalError("start review campaign", err)
	}
	return campaign, workflowID, nil
}

// List returns a page of the tenant's review runs, newest first (only running ones with openOnly,
// only campaign's when it is set).
func (r *Reviews) List(ctx context.Context, tenant string, openOnly bool, campaign string, pageSize int, pageToken string) ([]Review, string, error) {
	if !authn.ValidTenant(tenant) {
		return nil, "", errs.InvalidArgument("parent", "must be tenants/{tenant}")
	}
	if campaign != "" && !workflows.ValidCampaign(campaign) {
		return nil, "", errs.InvalidArgument("campaign", "is not a campaign id")
	}
	switch {
	case pageSize < 0:
		return nil, "", errs.InvalidArgument("page_size", "must not be negative")
	case pageSize == 0:
		pageSize = defaultIncidentPage
	case pageSize > maxIncidentPage:
		pageSize = maxIncidentPage
	}
	token, err := base64.RawURLEncoding.DecodeString(pageToken)
	if err != nil {
		return nil, "", errs.InvalidArgument("page_token", "is not a token of an earlier response")
	}
	query := fmt.Sprintf("WorkflowType = '%s' AND %s = '%s'", workflows.ReviewWorkflowName, workflows.TenantKey.GetName(), tenant)
	if openOnly {
		query += " AND ExecutionStatus = 'Running'"
	}
	resp, err := r.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: int32(pageSize), NextPageToken: token, Query: query,
	})
	if err != nil {
		return nil, "", temporalError("list review runs", err)
	}
	out := make([]Review, 0, len(resp.GetExecutions()))
	for _, e := range resp.GetExecutions() {
		rv := Review{Run: Run{WorkflowID: e.GetExecution().GetWorkflowId(), RunID: e.GetExecution().GetRunId(), StartTime: e.GetStartTime().AsTime()}}
		rv.Agent, rv.Campaign = memoString(e.GetMemo(), "agent"), memoString(e.GetMemo(), "campaign")
		if rv.Campaign == "" {
			if parts := strings.Split(rv.Run.WorkflowID, "/"); len(parts) == 4 {
				rv.Campaign = parts[2]
			}
		}
		if campaign != "" && rv.Campaign != campaign {
			continue
		}
		if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			if st, err := r.status(ctx, rv.Run.WorkflowID, rv.Run.RunID); err == nil {
				rv.apply(st)
			}
		} else {
			rv.Run.Completed, rv.Run.Stage = true, workflows.StageDone
			if e.GetCloseTime() != nil {
				rv.Run.CloseTime = e.GetCloseTime().AsTime()
			}
			var res workflows.ReviewResult
			if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED &&
				r.temporal.GetWorkflow(ctx, rv.Run.WorkflowID, rv.Run.RunID).Get(ctx, &res) == nil {
				rv.Run.Result, rv.Status.Outcome, rv.Status.Removed, rv.Status.Timeline = res.Outcome, res.Outcome, res.Removed, res.Timeline
				if res.DecidedBy != "" {
					rv.Status.Decision = &workflows.ReviewTaken{Decider: res.DecidedBy}
				}
			} else {
				rv.Run.Result = strings.ToLower(strings.TrimPrefix(e.GetStatus().String(), "WORKFLOW_EXECUTION_STATUS_"))
			}
		}
		if rv.Agent == "" {
			rv.Agent = rv.Status.Agent
		}
		out = append(out, rv)
	}
	return out, base64.RawURLEncoding.EncodeToString(resp.GetNextPageToken()), nil
}

func memoString(m *commonpb.Memo, k string) string {
	var v string
	if p := m.GetFields()[k]; p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &v)
	}
	return v
}

func (rv *Review) apply(st workflows.ReviewStatus) {
	rv.Status = st
	rv.Run.Stage, rv.Run.WaitingFor, rv.Run.ApprovalStep = st.Stage, st.WaitingFor, st.Decider
}

func (r *Reviews) status(ctx context.Context, id, runID string) (workflows.ReviewStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	v, err := r.temporal.QueryWorkflow(ctx, id, runID, workflows.StatusQuery)
	if err != nil {
		return workflows.ReviewStatus{}, err
	}
	var st workflows.ReviewStatus
	return st, v.Get(&st)
}

// ReviewDecisionInput is one decision on a review submitted through the API.
type ReviewDecisionInput struct {
	// Agent and Campaign name the review.
	Agent, Campaign string
	// Certify is true to certify, false to revoke.
	Certify bool
	// Keep keeps unused scopes with their reasons; Remove removes scopes (certify only).
	Keep   map[string]string
	Remove []string
	// Comment is recorded.
	Comment string
	// Token is the caller's approval token. Required.
	Token string
	// RequestID identifies the submission; empty makes up a fresh one.
	RequestID string
}

// Decide forwards p's decision to the review run (update decide-review) and returns the review after
// it. NotFound for an unknown review; FailedPrecondition when the run is not waiting or refuses the
// decision (reason APPROVAL_REFUSED, saying why).
func (r *Reviews) Decide(ctx context.Context, p *authn.Principal, d ReviewDecisionInput) (Review, error) {
	tenant, agentID, err := ParseAgent("agent", d.Agent)
	if err != nil {
		return Review{}, err
	}
	if !workflows.ValidCampaign(d.Campaign) {
		return Review{}, errs.InvalidArgument("campaign", "must be the review's campaign id")
	}
	if d.Token == "" {
		return Review{}, errs.InvalidArgument("approval_token", "is required: get one with IssuerService.IssueApprovalToken for the review run, its step and decision APPROVE (certify) or REJECT (revoke)")
	}
	updateID, err := checkRequestID(d.RequestID)
	if err != nil {
		return Review{}, err
	}
	id := workflows.ReviewWorkflowID(tenant, d.Campaign, agentID)
	decision := workflows.ReviewRevoke
	if d.Certify {
		decision = workflows.ReviewCertify
	}
	h, err := r.temporal.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		UpdateID: updateID, WorkflowID: id, UpdateName: workflows.ReviewDecideUpdate,
		Args: []any{workflows.ReviewDecision{Token: d.Token, Decision: decision, Keep: d.Keep, Remove: d.Remove,
			Comment: d.Comment, SubmittedBy: p.ID}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	var after workflows.ReviewStatus
	if err == nil {
		err = h.Get(ctx, &after)
	}
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
	case workflows.IsApprovalRefused(err):
		return Review{}, errs.FailedPrecondition("APPROVAL_REFUSED", approvalMessage(err))
	case errors.As(err, &nf):
		return Review{}, errs.NotFound("REVIEW_NOT_FOUND", "no open review of this agent in this campaign").WithMetadata("campaign", d.Campaign)
	default:
		return Review{}, temporalError("decide review", err)
	}
	rv := Review{Run: Run{WorkflowID: id}, Agent: d.Agent, Campaign: d.Campaign}
	rv.apply(after)
	return rv, nil
}
