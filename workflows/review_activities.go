package workflows

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Lifecycle event types of access reviews (stream LIFECYCLE, aggregate "lifecycle" of the agent).
const (
	EventReviewOpened        = "lifecycle.review_opened"
	EventReviewDecided       = "lifecycle.review_decided"
	EventReviewEscalated     = "lifecycle.review_escalated"
	EventReviewScopesRemoved = "lifecycle.review_scopes_removed"
	EventReviewClosed        = "lifecycle.review_closed"
)

// ReviewUsageRequest asks which scopes an agent used in a window.
type ReviewUsageRequest struct {
	// Agent is the resource name.
	Agent string
	// Start and End bound the window.
	Start, End time.Time
}

// ReviewUsage is how often each scope was used in the window.
type ReviewUsage struct {
	// Uses counts the events per scope (scopes never used are absent).
	Uses map[string]int64
	// NotEnoughTelemetry is set when the monitor's telemetry of the tenant starts after the window
	// does (CoverageStart, zero when it holds none): no scope may then be called unused.
	NotEnoughTelemetry bool      `json:",omitempty"`
	CoverageStart      time.Time `json:",omitzero"`
}

// ReviewScopeUsage asks the monitor which scopes the agent used in the window
// (MonitorService.GetAgentUsage). Without a monitor it fails the review (closed: without telemetry
// no scope can be called unused); when the monitor's telemetry does not cover the whole window
// (coverage_start_time empty or after its start) it says NotEnoughTelemetry.
func (a *Activities) ReviewScopeUsage(ctx context.Context, in ReviewUsageRequest) (ReviewUsage, error) {
	if a.Monitor == nil {
		return ReviewUsage{}, temporal.NewNonRetryableApplicationError(
			"access review: the lifecycle worker has no monitor to ask for scope usage (configure its address)", "MONITOR_NOT_CONFIGURED", nil)
	}
	resp, err := a.Monitor.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{
		Agent: in.Agent, StartTime: timestamppb.New(in.Start), EndTime: timestamppb.New(in.End),
	})
	if err != nil {
		return ReviewUsage{}, classify("monitor.GetAgentUsage", err)
	}
	out := ReviewUsage{Uses: map[string]int64{}, NotEnoughTelemetry: !covers(resp.GetCoverageStartTime(), in.Start)}
	if c := resp.GetCoverageStartTime(); c.IsValid() {
		out.CoverageStart = c.AsTime().UTC()
	}
	for _, u := range resp.GetScopes() {
		if u.GetCount() > 0 {
			out.Uses[u.GetValue()] += u.GetCount()
		}
	}
	return out, nil
}

// RemoveScopesRequest asks to remove scopes from an agent.
type RemoveScopesRequest struct {
	// Agent is the resource name.
	Agent string
	// Scopes are the scopes to remove.
	Scopes []string
	// Reason is recorded with the removal.
	Reason string
	// Ticket is review:<campaign>.
	Ticket string
	// RequestID is the idempotency key.
	RequestID string
}

// RemoveScopesResult says what became of the removal.
type RemoveScopesResult struct {
	// Remaining are the agent's scopes after it.
	Remaining []string
	// Gone is set when the agent is in a state that keeps no scopes to remove (retiring, retired);
	// State names it.
	Gone  bool
	State string
}

// ReviewRemoveScopes removes scopes from the agent (RegistryService.RemoveAgentScopes); the issuer
// grants them no more. An agent retired meanwhile is reported as gone.
func (a *Activities) ReviewRemoveScopes(ctx context.Context, in RemoveScopesRequest) (RemoveScopesResult, error) {
	resp, err := a.Registry.RemoveAgentScopes(ctx, &registryv1.RemoveAgentScopesRequest{
		Name: in.Agent, Scopes: in.Scopes, Reason: truncate(in.Reason, maxSuspendReason), Ticket: in.Ticket, RequestId: in.RequestID,
	})
	if e := errs.FromStatus(err); err != nil && e.Kind == errs.KindFailedPrecondition {
		agent, gerr := a.getAgent(ctx, in.Agent)
		if gerr != nil {
			return RemoveScopesResult{}, gerr
		}
		switch st := agent.GetState(); st {
		case registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED:
			return RemoveScopesResult{}, classify("registry.RemoveAgentScopes", err)
		default:
			return RemoveScopesResult{Gone: true, State: stateName(st)}, nil
		}
	}
	if err != nil {
		return RemoveScopesResult{}, classify("registry.RemoveAgentScopes", err)
	}
	return RemoveScopesResult{Remaining: resp.GetAgent().GetScopes()}, nil
}

// ReviewEventRecord is one lifecycle.review_* event to record; Type says which fields count.
type ReviewEventRecord struct {
	// Type is one of the EventReview* types.
	Type string
	// Tenant, Agent, AgentID, Campaign and WorkflowID name the review.
	Tenant, Agent, AgentID, Campaign, WorkflowID string
	// IdempotencyKey is the key of the append.
	IdempotencyKey string
	// Used and Unused are the scopes used and unused in the window, from UsageStart (opened); Due
	// is when the owner's window ends.
	Used, Unused []string  `json:",omitempty"`
	UsageStart   time.Time `json:",omitzero"`
	Due          time.Time `json:",omitzero"`
	// Decision, DecidedBy, Role, Step, Comment and TokenID describe a decision (decided; DecidedBy
	// also closed).
	Decision, DecidedBy, Role, Step, Comment, TokenID string `json:",omitempty"`
	// Kept are kept scopes (`scope: reason` when decided), Removed removed ones, Reasons why each was
	// removed (scopes removed).
	Kept, Removed, Reasons []string `json:",omitempty"`
	// FromStep and ToStep describe an escalation.
	FromStep, ToStep string `json:",omitempty"`
	// Outcome and Timeline close the review.
	Outcome  string   `json:",omitempty"`
	Timeline []string `json:",omitempty"`
}

// RecordReviewEvent appends one lifecycle.review_* event on the agent's lifecycle aggregate.
func (a *Activities) RecordReviewEvent(ctx context.Context, in ReviewEventRecord) error {
	var msg proto.Message
	switch in.Type {
	case EventReviewOpened:
		msg = &lifecyclev1.ReviewOpened{Agent: in.Agent, Campaign: in.Campaign, WorkflowId: in.WorkflowID, UsedScopes: in.Used,
			UnusedScopes: in.Unused, UsageStartTime: timestamppb.New(in.UsageStart), DueTime: timestamppb.New(in.Due)}
	case EventReviewDecided:
		msg = &lifecyclev1.ReviewDecided{Agent: in.Agent, Campaign: in.Campaign, WorkflowId: in.WorkflowID, Decision: in.Decision,
			DecidedBy: in.DecidedBy, Role: in.Role, Step: in.Step, Kept: in.Kept, Removed: in.Removed, Comment: in.Comment, ApprovalTokenId: in.TokenID}
	case EventReviewEscalated:
		msg = &lifecyclev1.ReviewEscalated{Agent: in.Agent, Campaign: in.Campaign, WorkflowId: in.WorkflowID, FromStep: in.FromStep, ToStep: in.ToStep}
	case EventReviewScopesRemoved:
		msg = &lifecyclev1.ReviewScopesRemoved{Agent: in.Agent, Campaign: in.Campaign, WorkflowId: in.WorkflowID, Scopes: in.Removed, Reasons: in.Reasons}
	case EventReviewClosed:
		msg = &lifecyclev1.ReviewClosed{Agent: in.Agent, Campaign: in.Campaign, WorkflowId: in.WorkflowID, Outcome: in.Outcome,
			DecidedBy: in.DecidedBy, KeptScopes: in.Kept, RemovedScopes: in.Removed, Timeline: in.Timeline}
	default:
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("review event type %q is unknown", in.Type), "INVALID_ARGUMENT", nil)
	}
	return a.record(ctx, in.Tenant, in.AgentID, in.Agent, in.Type, in.IdempotencyKey, in.WorkflowID, "", msg)
}

// ReviewTarget is one ACTIVE agent a campaign opens a review for.
type ReviewTarget struct {
	// Agent and AgentID name it.
	Agent, AgentID string
	// Owner, Sponsor and RiskTier as the registry holds them.
	Owner, Sponsor, RiskTier string
	// Scopes are its scopes.
	Scopes []string
}

// ReviewCampaignPageRequest asks for one page of a tenant's agents.
type ReviewCampaignPageRequest struct {
	// Tenant whose agents are listed.
	Tenant string
	// PageToken is the registry's page token; empty for the first page.
	PageToken string
}

// ReviewCampaignPage is one page of a tenant's agents under review.
type ReviewCampaignPage struct {
	// Targets are the page's ACTIVE agents with at least one scope.
	Targets []ReviewTarget
	// NextPageToken is the registry's token of the next page; empty on the last.
	NextPageToken string
}

// ListReviewTargets reads one page of a tenant's agents and returns the ACTIVE ones with scopes.
func (a *Activities) ListReviewTargets(ctx context.Context, in ReviewCampaignPageRequest) (ReviewCampaignPage, error) {
	resp, err := a.Registry.ListAgents(ctx, &registryv1.ListAgentsRequest{
		Parent: "tenants/" + in.Tenant, PageSize: SweepPageSize, PageToken: in.PageToken,
	})
	if err != nil {
		return ReviewCampaignPage{}, classify("registry.ListAgents", err)
	}
	out := ReviewCampaignPage{NextPageToken: resp.GetNextPageToken()}
	for _, ag := range resp.GetAgents() {
		if ag.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || len(ag.GetScopes()) == 0 {
			continue
		}
		out.Targets = append(out.Targets, ReviewTarget{
			Agent: ag.GetName(), AgentID: ag.GetAgentId(), Owner: ag.GetOwner(), Sponsor: ag.GetSponsor(),
			RiskTier: RiskTierName(ag.GetRiskTier()), Scopes: ag.GetScopes(),
		})
	}
	return out, nil
}
