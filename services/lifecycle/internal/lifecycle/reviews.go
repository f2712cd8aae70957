package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
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

// DefaultReviewCron is when the quarterly access review campaign starts: 06:00 UTC on the first day
// of January, April, July and October.
const DefaultReviewCron = "0 6 1 1,4,7,10 *"

// ReviewConfig configures access reviews: the quarterly campaigns' Schedule and the windows every
// campaign uses unless a start on demand asks for others.
type ReviewConfig struct {
	// Cron is when campaigns start (a five-field cron expression in UTC, default DefaultReviewCron);
	// "off" deletes the Schedule.
	Cron string
	// UsageDays is the usage window: a scope unused in it is proposed for removal (0:
	// workflows.DefaultReviewUsageDays, 90).
	UsageDays int
	// AnswerDays is how long the owner, then the sponsor, may take to answer (0: 14).
	AnswerDays int
}

// ReviewScheduleOff is the ReviewConfig.Cron value that turns the quarterly campaigns off.
const ReviewScheduleOff = "off"

// cronFieldRE is one field of a five-field cron expression.
var cronFieldRE = regexp.MustCompile(`^[0-9A-Za-z*?/,-]+$`)

// Validate checks c; errors name the field.
func (c ReviewConfig) Validate() error {
	if cron := strings.TrimSpace(c.Cron); cron != "" && cron != ReviewScheduleOff && !strings.HasPrefix(cron, "@") {
		fields := strings.Fields(cron)
		if len(fields) != 5 || slices.ContainsFunc(fields, func(f string) bool { return !cronFieldRE.MatchString(f) }) {
			return errs.InvalidArgument("review_cron", fmt.Sprintf("%q is not a cron expression (minute hour day-of-month month day-of-week, e.g. %q) or %s", c.Cron, DefaultReviewCron, ReviewScheduleOff))
		}
	}
	switch {
	case c.UsageDays < 0 || c.UsageDays > 400:
		return errs.InvalidArgument("review_usage_days", fmt.Sprintf("%d is not between 1 and 400 (0: %d)", c.UsageDays, workflows.DefaultReviewUsageDays))
	case c.AnswerDays < 0 || c.AnswerDays > 90:
		return errs.InvalidArgument("review_answer_days", fmt.Sprintf("%d is not between 1 and 90 (0: 14)", c.AnswerDays))
	}
	return nil
}

// EnsureReviewSchedule creates the Temporal Schedule workflows.ReviewScheduleID that starts an
// access review campaign over every tenant on cfg.Cron (default DefaultReviewCron) with cfg's
// windows, or updates it; cron "off" deletes it. Calling it again with the same arguments changes
// nothing.
func EnsureReviewSchedule(ctx context.Context, sc client.ScheduleClient, taskQueue string, cfg ReviewConfig, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	id := workflows.ReviewScheduleID
	cron := strings.TrimSpace(cfg.Cron)
	if cron == ReviewScheduleOff {
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
		ID: id, Workflow: workflows.ReviewCampaignWorkflowName, TaskQueue: taskQueue, WorkflowExecutionTimeout: sweepRunTimeout,
		Args: []any{workflows.ReviewCampaignInput{UsageDays: cfg.UsageDays, AnswerFor: time.Duration(cfg.AnswerDays) * 24 * time.Hour}},
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
	defaults  ReviewConfig
	now       func() time.Time
	registry  registryv1.RegistryServiceClient // the directory of deciders (WithRegistry)
}

// WithRegistry has r check an owner's or sponsor's decision against the tenant's directory in the
// registry reg (CALLER_NOT_ACTIVE for a principal not ACTIVE there); without it such decisions are
// refused as Unavailable.
func (r *Reviews) WithRegistry(reg registryv1.RegistryServiceClient) *Reviews {
	r.registry = reg
	return r
}

// NewReviews returns Reviews using t (the lifecycle service's Temporal client) and its task queue;
// campaigns started on demand without windows of their own use those of cfg.
func NewReviews(t IncidentTemporal, taskQueue string, cfg ReviewConfig) (*Reviews, error) {
	if t == nil {
		return nil, errors.New("lifecycle: NewReviews needs a Temporal client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if taskQueue == "" {
		taskQueue = workflows.TaskQueue
	}
	return &Reviews{temporal: t, taskQueue: taskQueue, defaults: cfg, now: time.Now}, nil
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
// with the same request id starts nothing new) or od-<time> without one. Zero days take the windows
// of the service's ReviewConfig.
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
	if usageDays == 0 {
		usageDays = r.defaults.UsageDays
	}
	if answerDays == 0 {
		answerDays = r.defaults.AnswerDays
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
	extra := ""
	if campaign != "" {
		// In the query, so that a page holds page_size reviews of the campaign (tenant and campaign
		// are validated: no quote can reach it).
		extra = fmt.Sprintf(" AND WorkflowId STARTS_WITH '%s'", workflows.ReviewWorkflowID(tenant, campaign, ""))
	}
	resp, err := listRuns(ctx, r.temporal, workflows.ReviewWorkflowName, tenant, openOnly, extra, pageSize, pageToken, "review runs")
	if err != nil {
		return nil, "", err
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
	updateID, err := callerUpdateID(p, d.RequestID)
	if err != nil {
		return Review{}, err
	}
	if err := checkDecider(ctx, r.registry, p, d.Agent); err != nil {
		return Review{}, err
	}
	id := workflows.ReviewWorkflowID(tenant, d.Campaign, agentID)
	decision := workflows.ReviewRevoke
	if d.Certify {
		decision = workflows.ReviewCertify
	}
	var after workflows.ReviewStatus
	err = updateRun(ctx, r.temporal, updateID, id, workflows.ReviewDecideUpdate, workflows.ReviewDecision{Token: d.Token,
		Decision: decision, Keep: d.Keep, Remove: d.Remove, Comment: d.Comment, SubmittedBy: p.ID}, &after)
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
