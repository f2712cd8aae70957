package workflows

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Temporal names of access reviews.
const (
	// ReviewWorkflowName is the registered name of ReviewWorkflow.
	ReviewWorkflowName = "ReviewWorkflow"
	// ReviewCampaignWorkflowName is the registered name of ReviewCampaignWorkflow.
	ReviewCampaignWorkflowName = "ReviewCampaignWorkflow"
	// ReviewDecideUpdate carries a ReviewDecision and answers with the run's ReviewStatus once the
	// review has closed; its validator and handler refuse decisions the run cannot take.
	ReviewDecideUpdate = "decide-review"
	// ReviewScheduleID is the id of the Temporal Schedule that starts the quarterly campaigns.
	ReviewScheduleID = "review-campaign"
)

// Stages of review runs (Stage search attribute and status query).
const (
	StageReviewUsage  = "usage"
	StageReviewDecide = "decide"
	StageReviewClose  = "close"
)

// Review decisions, from the approval token's decision: approve certifies, reject revokes.
const (
	ReviewCertify = "certify"
	ReviewRevoke  = "revoke"
)

// Per-scope decisions of a review.
const (
	ScopeKeep   = "keep"
	ScopeRemove = "remove"
)

// Outcomes of review runs (ReviewClosed.outcome).
const (
	ReviewOutcomeCertified = "certified"
	ReviewOutcomeSuspended = "suspended"
	ReviewOutcomeAgentGone = "agent_gone"
)

// Defaults of access reviews.
const (
	// DefaultReviewUsageDays is the usage window: a scope not used in it is proposed for removal.
	DefaultReviewUsageDays = 90
	// DefaultReviewAnswerFor is how long the owner, then the sponsor, may take to answer.
	DefaultReviewAnswerFor = 14 * 24 * time.Hour
	// maxKeepReason bounds the reason an unused scope is kept with.
	maxKeepReason = 500
)

// campaignRE is the form of a campaign id (it appears in workflow ids and the suspension cause).
var campaignRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$`)

// ValidCampaign reports whether c is a campaign id: letters, digits and ._:- (no slash), at most 80.
func ValidCampaign(c string) bool { return campaignRE.MatchString(c) }

// ReviewWorkflowID is the deterministic id of one agent's review in a campaign.
func ReviewWorkflowID(tenant, campaign, agentID string) string {
	return "review/" + tenant + "/" + campaign + "/" + agentID
}

// ReviewCampaignWorkflowID is the id of a campaign run started on demand in one tenant.
func ReviewCampaignWorkflowID(tenant, campaign string) string {
	return "review-campaign/" + tenant + "/" + campaign
}

// ReviewCause is the suspension cause of a review: review:<campaign>.
func ReviewCause(campaign string) string { return "review:" + campaign }

// ReviewInput starts ReviewWorkflow for one agent.
type ReviewInput struct {
	// Tenant of the agent.
	Tenant string
	// Campaign is the campaign id.
	Campaign string
	// Agent is the agent's resource name and AgentID its id.
	Agent, AgentID string
	// Owner and Sponsor are the agent's owner and sponsor when the review opened.
	Owner, Sponsor string
	// RiskTier is the agent's risk tier.
	RiskTier string
	// Scopes are the agent's scopes when the review opened.
	Scopes []string
	// UsageDays is the usage window (default DefaultReviewUsageDays).
	UsageDays int
	// AnswerFor is how long the owner may take before the review escalates to the sponsor (default
	// DefaultReviewAnswerFor).
	AnswerFor time.Duration
	// SponsorFor is how long the sponsor may take before the agent is suspended (default AnswerFor).
	SponsorFor time.Duration
}

func (in ReviewInput) validate() error {
	bad := func(format string, args ...any) error {
		return temporal.NewNonRetryableApplicationError("review: "+fmt.Sprintf(format, args...), "INVALID_ARGUMENT", nil)
	}
	switch {
	case !ValidCampaign(in.Campaign):
		return bad("campaign %q is not letters, digits and ._:- (at most 80)", in.Campaign)
	case in.UsageDays < 0 || in.UsageDays > 400:
		return bad("usage days %d is not between 1 and 400", in.UsageDays)
	case in.AnswerFor < 0 || in.SponsorFor < 0:
		return bad("answer windows must not be negative")
	}
	return validateAgent(in.Tenant, in.Agent, in.AgentID)
}

// ReviewScopeStatus is one scope under review.
type ReviewScopeStatus struct {
	// Scope is the scope.
	Scope string `json:"scope"`
	// Used says whether the agent used it in the usage window; Uses counts the events.
	Used bool  `json:"used"`
	Uses int64 `json:"uses,omitempty"`
	// Decision is keep or remove once decided (unused scopes); empty while undecided.
	Decision string `json:"decision,omitempty"`
	// Reason is why an unused scope is kept, or why a scope is removed.
	Reason string `json:"reason,omitempty"`
}

// ReviewDecision answers a review, sent as update "decide-review". Decider, step and decision are
// taken from the verified approval token (approve = certify, reject = revoke), never from the JSON.
type ReviewDecision struct {
	// Token is the decider's approval token for this run, its step and decision approve or reject.
	Token string `json:"token"`
	// Decision is certify or revoke; when set it must match the token's decision.
	Decision string `json:"decision,omitempty"`
	// Keep keeps unused scopes, each with its reason (certify only).
	Keep map[string]string `json:"keep,omitempty"`
	// Remove removes scopes now (certify only); unused scopes not kept are removed anyway.
	Remove []string `json:"remove,omitempty"`
	// Comment is free text, recorded.
	Comment string `json:"comment,omitempty"`
	// SubmittedBy is the authenticated caller that relayed the decision (set by the lifecycle
	// service); when set it must be the token's subject.
	SubmittedBy string `json:"submitted_by,omitempty"`
}

// ReviewTaken is the decision a review run took.
type ReviewTaken struct {
	// Decider is the approval token's subject, Role the role they decided in, Step the step.
	Decider string `json:"decider"`
	Role    string `json:"role"`
	Step    string `json:"step"`
	// Decision is certify or revoke.
	Decision string `json:"decision"`
	// Keep are the unused scopes kept, with their reasons.
	Keep map[string]string `json:"keep,omitempty"`
	// Remove are the scopes the decider removed.
	Remove []string `json:"remove,omitempty"`
	// Comment is the decider's comment.
	Comment string `json:"comment,omitempty"`
	// TokenID is the approval token's jti.
	TokenID string `json:"token_id"`
	// Time is when the run took it.
	Time time.Time `json:"time"`
}

// ReviewStatus is the answer of query "status" and update "decide-review" of a review run.
type ReviewStatus struct {
	// Stage is the current stage.
	Stage string `json:"stage"`
	// Agent and Campaign name the review.
	Agent    string `json:"agent"`
	Campaign string `json:"campaign"`
	// Scopes are the agent's scopes with their use and decisions.
	Scopes []ReviewScopeStatus `json:"scopes,omitempty"`
	// UsageStart is the start of the usage window.
	UsageStart time.Time `json:"usage_start,omitzero"`
	// Decider is who is asked to decide now (owner, sponsor) while the run waits.
	Decider string `json:"decider,omitempty"`
	// Due is when the current decider's window ends.
	Due time.Time `json:"due,omitzero"`
	// WaitingFor says what the run waits for, if anything.
	WaitingFor string `json:"waiting_for,omitempty"`
	// MayAct lists who may decide the current step.
	MayAct []string `json:"may_act,omitempty"`
	// Decision is the decision taken, once there is one.
	Decision *ReviewTaken `json:"decision,omitempty"`
	// Outcome is certified, suspended or agent_gone once closed.
	Outcome string `json:"outcome,omitempty"`
	// Removed are the scopes removed at close.
	Removed []string `json:"removed,omitempty"`
	// Timeline is every step with its UTC time.
	Timeline []string `json:"timeline,omitempty"`
	// Reason explains a failure.
	Reason string `json:"reason,omitempty"`
	// Refused are the newest decisions the run refused, with why (at most 20).
	Refused []Refusal `json:"refused,omitempty"`
	// RefusedCount counts every decision the run refused.
	RefusedCount int `json:"refused_count,omitempty"`
}

// ReviewResult is how a review ended: the evidence of lifecycle.review_closed.
type ReviewResult struct {
	// Outcome is certified, suspended or agent_gone.
	Outcome string
	// DecidedBy is the decider, empty when nobody answered.
	DecidedBy string
	// Kept are the scopes kept and Removed those removed.
	Kept, Removed []string
	// Timeline is every step with its UTC time.
	Timeline []string
}

// review is the state of one review run, shared by the main loop and the update handler.
type review struct {
	in       ReviewInput
	id       string
	status   ReviewStatus
	decided  *ReviewTaken
	closed   bool
	closeErr error
	tokenGate
}

// ReviewWorkflow reviews one agent's access in a campaign: it asks the monitor which scopes the agent
// used in the usage window, records lifecycle.review_opened (unused scopes proposed for removal),
// notifies the owner and waits for a decision (update "decide-review" with an approval token:
// approve certifies, reject revokes). Without an answer in time it escalates to the sponsor
// (lifecycle.review_escalated, notified), then suspends the agent (cause review:<campaign>). When it
// closes, every unused scope not kept with a reason is removed (RegistryService.RemoveAgentScopes:
// use it or lose it; lifecycle.review_scopes_removed), a revoked or unanswered review suspends the
// agent, and lifecycle.review_closed records the evidence.
func ReviewWorkflow(ctx workflow.Context, in ReviewInput) (ReviewResult, error) {
	if err := in.validate(); err != nil {
		return ReviewResult{}, err
	}
	if in.UsageDays == 0 {
		in.UsageDays = DefaultReviewUsageDays
	}
	if in.AnswerFor == 0 {
		in.AnswerFor = DefaultReviewAnswerFor
	}
	if in.SponsorFor == 0 {
		in.SponsorFor = in.AnswerFor
	}
	r := &review{in: in, id: workflow.GetInfo(ctx).WorkflowExecution.ID, status: ReviewStatus{
		Stage: StageReviewUsage, Agent: in.Agent, Campaign: in.Campaign,
	}}
	if err := r.registerHandlers(ctx); err != nil {
		return ReviewResult{}, err
	}
	ctx = workflow.WithActivityOptions(ctx, activityOptions)
	if err := workflow.UpsertTypedSearchAttributes(ctx, identityAttributes(in.AgentID, in.Tenant, in.RiskTier, StageReviewUsage)...); err != nil {
		return ReviewResult{}, err
	}
	res, err := r.run(ctx)
	r.closed, r.closeErr = true, err
	if err != nil {
		r.status.WaitingFor, r.status.MayAct, r.status.Decider = "", nil, ""
		r.status.Reason = errorMessage(err)
		if temporal.IsCanceledError(err) {
			ctx, _ = workflow.NewDisconnectedContext(ctx)
		}
		if serr := r.setStage(ctx, StageFailed); serr != nil {
			workflow.GetLogger(ctx).Error("cannot record the failed stage", "error", serr)
		}
		return ReviewResult{}, err
	}
	if err := r.setStage(ctx, StageDone); err != nil {
		return ReviewResult{}, err
	}
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return ReviewResult{}, err
	}
	return res, nil
}

// run opens the review, waits for the decision or escalates, and closes it.
func (r *review) run(ctx workflow.Context) (ReviewResult, error) {
	now := workflow.Now(ctx).UTC()
	start := now.Add(-time.Duration(r.in.UsageDays) * 24 * time.Hour)
	var usage ReviewUsage
	uctx := workflow.WithActivityOptions(ctx, sweepActivityOptions)
	if err := workflow.ExecuteActivity(uctx, acts.ReviewScopeUsage, ReviewUsageRequest{Agent: r.in.Agent, Start: start, End: now}).Get(ctx, &usage); err != nil {
		return ReviewResult{}, err
	}
	r.status.UsageStart = start
	var used, unused []string
	for _, s := range sortedUnique(r.in.Scopes) {
		n := usage.Uses[s]
		// Without telemetry over the whole window no scope is called unused (none proposed for removal).
		r.status.Scopes = append(r.status.Scopes, ReviewScopeStatus{Scope: s, Used: n > 0 || usage.NotEnoughTelemetry, Uses: n})
		if n > 0 || usage.NotEnoughTelemetry {
			used = append(used, s)
		} else {
			unused = append(unused, s)
		}
	}
	if usage.NotEnoughTelemetry {
		from := "none"
		if !usage.CoverageStart.IsZero() {
			from = "from " + usage.CoverageStart.Format(time.RFC3339)
		}
		r.log(ctx, "not enough telemetry (the monitor's telemetry of the tenant: "+from+"): no scope is proposed for removal")
	}
	due := workflow.Now(ctx).UTC().Add(r.in.AnswerFor)
	r.log(ctx, fmt.Sprintf("opened: %d scopes used since %s, unused (proposed for removal): %s", len(used), start.Format(time.RFC3339), listOrNone(unused)))
	if err := r.record(ctx, EventReviewOpened, "opened", ReviewEventRecord{Used: used, Unused: unused, UsageStart: start, Due: due}); err != nil {
		return ReviewResult{}, err
	}
	r.notify(ctx, "review.opened", StepOwner, unused)

	answered, err := r.await(ctx)
	if err != nil {
		return ReviewResult{}, err
	}
	d := r.decided
	if answered {
		r.log(ctx, d.Decision+" by "+d.Decider+" ("+d.Role+")")
		kept := make([]string, 0, len(d.Keep))
		for _, s := range sortedKeys(d.Keep) {
			kept = append(kept, s+": "+d.Keep[s])
		}
		if err := r.record(ctx, EventReviewDecided, "decided", ReviewEventRecord{
			Decision: d.Decision, DecidedBy: d.Decider, Role: d.Role, Step: d.Step, Kept: kept, Removed: d.Remove,
			Comment: d.Comment, TokenID: d.TokenID,
		}); err != nil {
			return ReviewResult{}, err
		}
	}
	return r.close(ctx, d)
}

// await waits for a decision by the owner, then by the sponsor; false when nobody answered in time.
func (r *review) await(ctx workflow.Context) (bool, error) {
	if err := r.setStage(ctx, StageReviewDecide); err != nil {
		return false, err
	}
	ladder := []struct {
		step string
		wait time.Duration
	}{{StepOwner, r.in.AnswerFor}}
	if r.in.Sponsor != "" {
		ladder = append(ladder, struct {
			step string
			wait time.Duration
		}{StepSponsor, r.in.SponsorFor})
	}
	for i, rung := range ladder {
		r.status.Decider = rung.step
		r.status.Due = workflow.Now(ctx).UTC().Add(rung.wait)
		r.status.WaitingFor = "a decision (certify or revoke) by " + rung.step
		r.status.MayAct = ReviewStepRoles(rung.step)
		if i > 0 {
			r.log(ctx, "no answer from "+ladder[i-1].step+": escalated to "+rung.step)
			if err := r.record(ctx, EventReviewEscalated, "escalated/"+rung.step, ReviewEventRecord{FromStep: ladder[i-1].step, ToStep: rung.step}); err != nil {
				return false, err
			}
			r.notify(ctx, "review.escalated", rung.step, r.unused())
		}
		ok, err := workflow.AwaitWithTimeout(ctx, rung.wait, func() bool { return r.decided != nil })
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	last := ladder[len(ladder)-1].step
	r.status.Decider, r.status.WaitingFor, r.status.MayAct, r.status.Due = "", "", nil, time.Time{}
	r.log(ctx, "no answer from "+last+": the agent is suspended")
	if err := r.record(ctx, EventReviewEscalated, "escalated/suspend", ReviewEventRecord{FromStep: last, ToStep: "suspend"}); err != nil {
		return false, err
	}
	return false, nil
}

// close removes every unused scope not kept (and those the decider removed), suspends the agent
// when the review was revoked or unanswered, and records lifecycle.review_closed.
func (r *review) close(ctx workflow.Context, d *ReviewTaken) (ReviewResult, error) {
	if err := r.setStage(ctx, StageReviewClose); err != nil {
		return ReviewResult{}, err
	}
	r.status.Decider, r.status.WaitingFor, r.status.MayAct, r.status.Due = "", "", nil, time.Time{}
	var remove, reasons, kept []string
	for i, s := range r.status.Scopes {
		why := ""
		switch {
		case d != nil && slices.Contains(d.Remove, s.Scope):
			why = "removed by " + d.Decider
		case s.Used:
		case d != nil && d.Keep[s.Scope] != "":
			r.status.Scopes[i].Decision, r.status.Scopes[i].Reason = ScopeKeep, d.Keep[s.Scope]
		default:
			why = fmt.Sprintf("not used in %d days and not kept with a reason", r.in.UsageDays)
		}
		if why == "" {
			kept = append(kept, s.Scope)
			continue
		}
		r.status.Scopes[i].Decision, r.status.Scopes[i].Reason = ScopeRemove, why
		remove = append(remove, s.Scope)
		reasons = append(reasons, s.Scope+": "+why)
	}
	outcome := ReviewOutcomeCertified
	if d == nil || d.Decision == ReviewRevoke {
		outcome = ReviewOutcomeSuspended
	}
	if len(remove) > 0 {
		var rm RemoveScopesResult
		if err := workflow.ExecuteActivity(ctx, acts.ReviewRemoveScopes, RemoveScopesRequest{
			Agent: r.in.Agent, Scopes: remove, Reason: truncate("access review "+r.in.Campaign+": "+strings.Join(reasons, "; "), maxSuspendReason),
			Ticket: ReviewCause(r.in.Campaign), RequestID: requestID(r.id, "remove-scopes"),
		}).Get(ctx, &rm); err != nil {
			return ReviewResult{}, err
		}
		if rm.Gone {
			outcome = ReviewOutcomeAgentGone
			r.log(ctx, "scopes not removed: the agent is "+rm.State)
		} else {
			r.status.Removed = remove
			r.log(ctx, "removed "+strings.Join(remove, ", "))
			if err := r.record(ctx, EventReviewScopesRemoved, "scopes-removed", ReviewEventRecord{Removed: remove, Reasons: reasons}); err != nil {
				return ReviewResult{}, err
			}
		}
	}
	if outcome == ReviewOutcomeSuspended {
		reason := "access review " + r.in.Campaign + ": no answer from the owner or the sponsor"
		if d != nil {
			reason = fmt.Sprintf("access review %s: access revoked by %s (%s)%s", r.in.Campaign, d.Decider, d.Role, incidentComment(d.Comment))
		}
		var sr SuspendResult
		if err := workflow.ExecuteActivity(ctx, acts.IncidentSuspendAgent, IncidentSuspendRequest{
			Agent: r.in.Agent, Reason: reason, Cause: ReviewCause(r.in.Campaign), Ticket: ReviewCause(r.in.Campaign),
			RequestID: requestID(r.id, "suspend"),
		}).Get(ctx, &sr); err != nil {
			return ReviewResult{}, err
		}
		if sr.Suspended {
			r.log(ctx, "suspended")
		} else {
			outcome = ReviewOutcomeAgentGone
			r.log(ctx, "not suspended: the agent is "+sr.State)
		}
	}
	r.status.Outcome = outcome
	decidedBy := ""
	if d != nil {
		decidedBy = d.Decider
	}
	r.log(ctx, "closed: "+outcome)
	if err := r.record(ctx, EventReviewClosed, "closed", ReviewEventRecord{
		Outcome: outcome, DecidedBy: decidedBy, Kept: kept, Removed: r.status.Removed, Timeline: slices.Clone(r.status.Timeline),
	}); err != nil {
		return ReviewResult{}, err
	}
	return ReviewResult{Outcome: outcome, DecidedBy: decidedBy, Kept: kept, Removed: slices.Clone(r.status.Removed), Timeline: slices.Clone(r.status.Timeline)}, nil
}

// unused lists the scopes not used in the window.
func (r *review) unused() []string {
	var out []string
	for _, s := range r.status.Scopes {
		if !s.Used {
			out = append(out, s.Scope)
		}
	}
	return out
}

// record appends one lifecycle.review_* event (idempotency key from the run and step).
func (r *review) record(ctx workflow.Context, typ, step string, rec ReviewEventRecord) error {
	rec.Type, rec.Tenant, rec.Agent, rec.AgentID, rec.Campaign, rec.WorkflowID = typ, r.in.Tenant, r.in.Agent, r.in.AgentID, r.in.Campaign, r.id
	rec.IdempotencyKey = requestID(r.id, step)
	return workflow.ExecuteActivity(ctx, acts.RecordReviewEvent, rec).Get(ctx, nil)
}

// notify sends one notification to the owner or the sponsor; one that cannot be delivered is
// recorded in the timeline, never fatal.
func (r *review) notify(ctx workflow.Context, kind, recipient string, unused []string) {
	to := r.in.Owner
	if recipient == StepSponsor {
		to = r.in.Sponsor
	}
	nctx := workflow.WithActivityOptions(ctx, notifyOptions)
	var res NotifyResult
	err := workflow.ExecuteActivity(nctx, acts.IncidentNotify, Notification{
		ID: requestID(r.id, "notify/"+kind+"/"+recipient), Kind: kind, Tenant: r.in.Tenant, Agent: r.in.Agent,
		Summary: fmt.Sprintf("access review %s: certify the agent's scopes by %s; unused for %d days (removed unless kept with a reason): %s",
			r.in.Campaign, r.status.Due.Format(time.RFC3339), r.in.UsageDays, listOrNone(unused)),
		RecipientRole: recipient, Recipient: to, Decider: r.status.Decider,
		WorkflowID: r.id, RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID, Time: workflow.Now(ctx).UTC(),
	}).Get(ctx, &res)
	switch {
	case err != nil:
		r.log(ctx, "notification to "+recipient+" failed: "+errorMessage(err))
	case !res.Delivered:
		r.log(ctx, "notification to "+recipient+" not sent: "+res.Detail)
	default:
		r.log(ctx, "notified "+recipient)
	}
}

func (r *review) log(ctx workflow.Context, what string) {
	r.status.Timeline = append(r.status.Timeline, workflow.Now(ctx).UTC().Format(time.RFC3339)+" "+what)
}

func (r *review) setStage(ctx workflow.Context, stage string) error {
	r.status.Stage = stage
	return workflow.UpsertTypedSearchAttributes(ctx, StageKey.ValueSet(stage))
}

func (r *review) snapshot() ReviewStatus {
	s := r.status
	s.Scopes = slices.Clone(s.Scopes)
	s.MayAct = slices.Clone(s.MayAct)
	s.Removed = slices.Clone(s.Removed)
	s.Timeline = slices.Clone(s.Timeline)
	s.Refused = slices.Clone(s.Refused)
	if r.decided != nil {
		d := *r.decided
		s.Decision = &d
	}
	return s
}

// registerHandlers installs query "status" and update "decide-review".
func (r *review) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (ReviewStatus, error) { return r.snapshot(), nil }); err != nil {
		return err
	}
	return workflow.SetUpdateHandlerWithOptions(ctx, ReviewDecideUpdate,
		func(ctx workflow.Context, d ReviewDecision) (ReviewStatus, error) {
			if err := r.verify(ctx, d); err != nil {
				return ReviewStatus{}, err
			}
			if err := workflow.Await(ctx, func() bool { return r.closed }); err != nil {
				return ReviewStatus{}, err
			}
			if r.closeErr != nil {
				return ReviewStatus{}, temporal.NewNonRetryableApplicationError("the decision was taken but the review could not be closed: "+errorMessage(r.closeErr), "DECISION_FAILED", nil)
			}
			return r.snapshot(), nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, d ReviewDecision) error {
			return r.precheck(d.normalize())
		}},
	)
}

// normalize trims the decision's fields and lower-cases the decision.
func (d ReviewDecision) normalize() ReviewDecision {
	d.Token = strings.TrimSpace(d.Token)
	d.Decision = strings.ToLower(strings.TrimSpace(d.Decision))
	d.Comment = strings.TrimSpace(d.Comment)
	d.SubmittedBy = strings.TrimSpace(d.SubmittedBy)
	if len(d.Keep) > 0 {
		keep := make(map[string]string, len(d.Keep))
		for s, why := range d.Keep {
			keep[strings.TrimSpace(s)] = strings.TrimSpace(why)
		}
		d.Keep = keep
	}
	for i, s := range d.Remove {
		d.Remove[i] = strings.TrimSpace(s)
	}
	return d
}

// waiting refuses a decision while the run is not waiting for one.
func (r *review) waiting() error {
	switch {
	case r.decided != nil:
		return fmt.Errorf("%w: the review has been decided already (%s by %s)", ErrApprovalRefused, r.decided.Decision, r.decided.Decider)
	case r.status.Stage != StageReviewDecide || r.status.Decider == "":
		return fmt.Errorf("%w: the review is not waiting for a decision (stage %s)", ErrApprovalRefused, r.status.Stage)
	}
	return nil
}

// precheck refuses, without verifying anything, a decision that cannot count.
func (r *review) precheck(d ReviewDecision) error {
	if err := r.waiting(); err != nil {
		return err
	}
	if err := tokenRefusal(d.Token, "a decision counts only with a token from the issuer for this run, its step and decision approve (certify) or reject (revoke)"); err != nil {
		return err
	}
	if err := decisionRefusal(d.Decision, ReviewCertify, ReviewRevoke); err != nil {
		return err
	}
	switch {
	case d.Decision == ReviewRevoke && (len(d.Keep) > 0 || len(d.Remove) > 0):
		return fmt.Errorf("%w: a revoke keeps and removes no scope (the agent is suspended)", ErrApprovalRefused)
	}
	for s, why := range d.Keep {
		i := slices.IndexFunc(r.status.Scopes, func(x ReviewScopeStatus) bool { return x.Scope == s })
		switch {
		case i < 0:
			return fmt.Errorf("%w: keep: %q is not a scope of the agent under review", ErrApprovalRefused, s)
		case r.status.Scopes[i].Used:
			return fmt.Errorf("%w: keep: %s was used in the window and is kept anyway; keep names unused scopes", ErrApprovalRefused, s)
		case why == "":
			return fmt.Errorf("%w: keep: unused scope %s is kept only with a reason", ErrApprovalRefused, s)
		case len(why) > maxKeepReason:
			return fmt.Errorf("%w: keep: the reason for %s is longer than %d bytes", ErrApprovalRefused, s, maxKeepReason)
		case slices.Contains(d.Remove, s):
			return fmt.Errorf("%w: %s is both kept and removed", ErrApprovalRefused, s)
		}
	}
	for _, s := range d.Remove {
		if !slices.ContainsFunc(r.status.Scopes, func(x ReviewScopeStatus) bool { return x.Scope == s }) {
			return fmt.Errorf("%w: remove: %q is not a scope of the agent under review", ErrApprovalRefused, s)
		}
	}
	return nil
}

// verify checks d's approval token and the run's rules and, when it counts, takes the decision. A
// refused decision is recorded in the status and changes nothing.
func (r *review) verify(ctx workflow.Context, d ReviewDecision) error {
	d = d.normalize()
	return r.decide(ctx, tokenDecision{
		Agent: r.in.Agent, Token: d.Token, Decision: d.Decision,
		Precheck: func() error { return r.precheck(d) },
		Judge: func(v VerifiedApproval) error {
			taken, err := r.judge(ctx, d, v)
			if err != nil {
				return err
			}
			r.decided = &taken
			r.status.WaitingFor, r.status.MayAct = "", nil
			return nil
		},
		Refuse: func(decider, decision string, err error) error { return r.refuse(ctx, decider, decision, err) },
	})
}

// judge applies the run's rules to a verified token: bound to this agent and run, used once, approve
// or reject for the step the run waits for, by someone who may decide it.
func (r *review) judge(ctx workflow.Context, d ReviewDecision, v VerifiedApproval) (ReviewTaken, error) {
	refused := func(format string, args ...any) (ReviewTaken, error) {
		return ReviewTaken{}, fmt.Errorf("%w: "+format, append([]any{ErrApprovalRefused}, args...)...)
	}
	if err := r.bind(ctx, r.in.Agent, "this review run", v); err != nil {
		return ReviewTaken{}, err
	}
	var decision string
	switch v.Decision {
	case DecisionApprove:
		decision = ReviewCertify
	case DecisionReject:
		decision = ReviewRevoke
	default:
		return refused("a review is decided with %q (certify) or %q (revoke), the approval token is for %q", DecisionApprove, DecisionReject, v.Decision)
	}
	if err := callerRefusal(d.SubmittedBy, v); err != nil {
		return ReviewTaken{}, err
	}
	if d.Decision != "" && d.Decision != decision {
		return refused("the approval token is for %s, the request says %s", decision, d.Decision)
	}
	if err := r.waiting(); err != nil {
		return ReviewTaken{}, err
	}
	if v.Step != r.status.Decider {
		return refused("the approval token is for the %s step, the review waits for a decision by %s", v.Step, r.status.Decider)
	}
	role, err := reviewStepRole(r.status.Decider, decision, v)
	if err != nil {
		return ReviewTaken{}, err
	}
	return ReviewTaken{Decider: v.Subject, Role: role, Step: r.status.Decider, Decision: decision, Keep: d.Keep,
		Remove: sortedUnique(d.Remove), Comment: d.Comment, TokenID: v.TokenID, Time: workflow.Now(ctx).UTC()}, nil
}

// ReviewStepRoles lists who may decide a review at step: the owner step by the agent's owner (or its
// sponsor as delegate), the sponsor step by the sponsor; revoke (which only takes access away) also
// by security-approver, approver and tenant-admin at any step.
func ReviewStepRoles(step string) []string {
	var out []string
	switch step {
	case StepOwner:
		out = []string{"the agent's owner", "the agent's sponsor (the owner's delegate)"}
	case StepSponsor:
		out = []string{"the agent's sponsor"}
	}
	out = append(out, "security-approver (revoke only)")
	for _, r := range RejectAnyStepRoles {
		out = append(out, r+" (revoke only)")
	}
	return out
}

// reviewStepRole is the role in which v's subject decides step, or why they may not.
func reviewStepRole(step, decision string, v VerifiedApproval) (string, error) {
	switch step {
	case StepOwner:
		if role := ownerRole(v); role != "" {
			return role, nil
		}
	case StepSponsor:
		if v.Sponsor != "" && v.Subject == v.Sponsor {
			return "sponsor", nil
		}
	}
	if decision == ReviewRevoke {
		for _, role := range append([]string{"security-approver"}, RejectAnyStepRoles...) {
			if slices.Contains(v.Roles, role) {
				return role, nil
			}
		}
	}
	return "", fmt.Errorf("%w: the %s step of a review is decided by %v; %s holds %v", ErrApprovalRefused, step, ReviewStepRoles(step), v.Subject, v.Roles)
}

// refuse records a refused decision in the status and the log and returns err.
func (r *review) refuse(ctx workflow.Context, decider, decision string, err error) error {
	keepRefusal(&r.status.Refused, &r.status.RefusedCount, Refusal{
		Time: workflow.Now(ctx), Approver: decider, Step: r.status.Decider, Decision: decision, Reason: err.Error(),
	})
	workflow.GetLogger(ctx).Warn("review decision refused", "agent", r.in.Agent, "campaign", r.in.Campaign, "decider", decider, "error", err)
	return err
}

func sortedUnique(in []string) []string {
	out := slices.Clone(in)
	sort.Strings(out)
	return slices.Compact(out)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
