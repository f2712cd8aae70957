package workflows

import (
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// ReviewCampaignInput configures one access review campaign (the Schedule's action carries it, or
// StartReviewCampaign).
type ReviewCampaignInput struct {
	// Campaign is the campaign id; empty: derived from the run's workflow id (the Schedule appends
	// the scheduled time to ReviewScheduleID).
	Campaign string
	// Tenants are the tenants under review; empty: every tenant the registry lists.
	Tenants []string
	// UsageDays is the usage window (default DefaultReviewUsageDays).
	UsageDays int
	// AnswerFor is each decider's window (default DefaultReviewAnswerFor).
	AnswerFor time.Duration
	// Next is where a continued run resumes: the index into Tenants and the page token.
	Next ReviewCampaignCursor
	// Opened counts the reviews opened by the run and the runs it continued from.
	Opened int
}

// ReviewCampaignCursor is the position of a campaign run that continued as new.
type ReviewCampaignCursor struct {
	// Tenant is the index of the tenant in ReviewCampaignInput.Tenants.
	Tenant int
	// PageToken is the registry's page token within it.
	PageToken string
}

// ReviewCampaignResult says what a campaign opened.
type ReviewCampaignResult struct {
	// Campaign is the campaign id.
	Campaign string
	// Tenants is how many tenants were reviewed and Opened how many reviews were opened.
	Tenants, Opened int
}

// campaignID derives the campaign id of a run: ReviewScheduleID-<time> becomes q-<time> without
// characters a campaign id may not hold.
func campaignID(workflowID string) string {
	if t, ok := strings.CutPrefix(workflowID, ReviewScheduleID+"-"); ok {
		return "q-" + strings.NewReplacer(":", "", "+", "").Replace(t)
	}
	return strings.NewReplacer("/", "-").Replace(workflowID)
}

// ReviewCampaignWorkflow opens one ReviewWorkflow (a child run, abandoned when the campaign run
// closes, id review/{tenant}/{campaign}/{agent}) per ACTIVE agent of each tenant, a page at a time;
// it continues as new after each page so that its history stays small whatever the number of agents.
// A review that already exists (a retried page) is left as it is.
func ReviewCampaignWorkflow(ctx workflow.Context, in ReviewCampaignInput) (ReviewCampaignResult, error) {
	if in.Campaign == "" {
		in.Campaign = campaignID(workflow.GetInfo(ctx).WorkflowExecution.ID)
	}
	if !ValidCampaign(in.Campaign) {
		return ReviewCampaignResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("review campaign: %q is not a campaign id", in.Campaign), "INVALID_ARGUMENT", nil)
	}
	actx := workflow.WithActivityOptions(ctx, sweepActivityOptions)
	if len(in.Tenants) == 0 {
		if err := workflow.ExecuteActivity(actx, acts.ListSweepTenants).Get(ctx, &in.Tenants); err != nil {
			return ReviewCampaignResult{}, err
		}
		if len(in.Tenants) == 0 {
			return ReviewCampaignResult{Campaign: in.Campaign}, nil
		}
	}
	if in.Next.Tenant >= len(in.Tenants) {
		return ReviewCampaignResult{Campaign: in.Campaign, Tenants: len(in.Tenants), Opened: in.Opened}, nil
	}
	tenant := in.Tenants[in.Next.Tenant]
	var page ReviewCampaignPage
	if err := workflow.ExecuteActivity(actx, acts.ListReviewTargets, ReviewCampaignPageRequest{Tenant: tenant, PageToken: in.Next.PageToken}).Get(ctx, &page); err != nil {
		return ReviewCampaignResult{}, err
	}
	var started []workflow.ChildWorkflowFuture
	for _, t := range page.Targets {
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:            ReviewWorkflowID(tenant, in.Campaign, t.AgentID),
			ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			Memo:                  map[string]any{"agent": t.Agent, "campaign": in.Campaign},
		})
		started = append(started, workflow.ExecuteChildWorkflow(cctx, ReviewWorkflowName, ReviewInput{
			Tenant: tenant, Campaign: in.Campaign, Agent: t.Agent, AgentID: t.AgentID, Owner: t.Owner, Sponsor: t.Sponsor,
			RiskTier: t.RiskTier, Scopes: t.Scopes, UsageDays: in.UsageDays, AnswerFor: in.AnswerFor,
		}))
	}
	for _, f := range started {
		if err := f.GetChildWorkflowExecution().Get(ctx, nil); err != nil {
			if !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				return ReviewCampaignResult{}, err
			}
			continue
		}
		in.Opened++
	}
	if page.NextPageToken != "" {
		in.Next.PageToken = page.NextPageToken
	} else {
		in.Next = ReviewCampaignCursor{Tenant: in.Next.Tenant + 1}
	}
	if in.Next.Tenant >= len(in.Tenants) {
		workflow.GetLogger(ctx).Info("review campaign opened", "campaign", in.Campaign, "tenants", len(in.Tenants), "reviews", in.Opened)
		return ReviewCampaignResult{Campaign: in.Campaign, Tenants: len(in.Tenants), Opened: in.Opened}, nil
	}
	return ReviewCampaignResult{}, workflow.NewContinueAsNewError(ctx, ReviewCampaignWorkflowName, in)
}
