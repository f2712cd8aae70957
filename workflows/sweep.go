package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// SweepWorkflowName is the registered name of SweepWorkflow.
const SweepWorkflowName = "SweepWorkflow"

// Kinds of sweeps (SweepInput.Kind).
const (
	// SweepExpired finds ACTIVE, SUSPENDED or EXPIRED agents whose expire time has passed (a missed
	// TTL timer, or a TTL run that recorded the expiry and failed before the retirement), records
	// them EXPIRED and retires them with trigger ttl.
	SweepExpired = "expired"
	// SweepInactive finds ACTIVE agents without activity for SweepInput.InactiveDays (from the
	// monitor's telemetry).
	SweepInactive = "inactive"
	// SweepOrphaned finds ACTIVE or SUSPENDED agents the registry marked orphaned (their owner or
	// sponsor departed) or without an owner and without a sponsor; an agent that lacks only one of
	// them is reported (SweepOutcomeReview), never retired.
	SweepOrphaned = "orphaned"
)

// SweepKinds lists every sweep kind.
var SweepKinds = []string{SweepExpired, SweepInactive, SweepOrphaned}

// What a sweep does with the agents it finds (SweepInput.Action).
const (
	// SweepActionReview records the agents in the run's result for a person to review; nothing changes.
	SweepActionReview = "review"
	// SweepActionDeprovision retires each agent (RetireAgent with the sweep's trigger); the
	// deprovisioning saga tears it down.
	SweepActionDeprovision = "deprovision"
)

// What a sweep did with one agent (SweepFinding.Outcome).
const (
	// SweepOutcomeRetired: the registry accepted the retirement (the agent is RETIRING).
	SweepOutcomeRetired = "retired"
	// SweepOutcomeReview: recorded for review only.
	SweepOutcomeReview = "review"
	// SweepOutcomeChanged: the agent left the state the sweep found it in before it could be retired
	// (retired meanwhile, e.g. by its TTL run); nothing was done.
	SweepOutcomeChanged = "changed_meanwhile"
	// SweepOutcomeHeld: the run's breaker tripped (more retirements in the tenant than it allows);
	// nothing was done.
	SweepOutcomeHeld = "held_by_breaker"
	// SweepOutcomeCandidate: found by a page, to be retired when the run's breaker allows (never
	// in a result).
	SweepOutcomeCandidate = "candidate"
)

// Defaults of the retirement breaker (SweepInput.MaxRetirements, MaxRetirementPercent).
const (
	// DefaultSweepMaxRetirements is how many agents of a tenant one run may retire at least.
	DefaultSweepMaxRetirements = 10
	// DefaultSweepMaxRetirementPercent is the share of a tenant's live agents one run may retire
	// when that is more than MaxRetirements.
	DefaultSweepMaxRetirementPercent = 5
)

// DefaultInactiveDays is how long an agent may go without activity before the inactivity sweep finds it.
const DefaultInactiveDays = 90

// SweepPageSize is how many agents one SweepPage activity reads from the registry.
const SweepPageSize = 200

// SweepScheduleID is the id of the Temporal Schedule running a sweep kind: sweep-expired,
// sweep-inactive, sweep-orphaned.
func SweepScheduleID(kind string) string { return "sweep-" + kind }

// SweepInput configures one sweep run (the Schedule's action carries it).
type SweepInput struct {
	// Kind is SweepExpired, SweepInactive or SweepOrphaned.
	Kind string
	// Action is SweepActionReview or SweepActionDeprovision; empty is SweepActionDeprovision for
	// expired agents and SweepActionReview otherwise. An expired agent is always deprovisioned.
	Action string
	// InactiveDays is the inactivity threshold of SweepInactive (default DefaultInactiveDays).
	InactiveDays int
	// Schedule is the id of the Schedule that started the run (default SweepScheduleID(Kind)); it
	// names the run in the change reference of what the run does.
	Schedule string
	// Tenants restricts the sweep to these tenants; empty sweeps every tenant the registry lists.
	Tenants []string
	// MaxRetirements and MaxRetirementPercent are the run's breaker: a deprovisioning run retires
	// in a tenant at most MaxRetirements agents, or MaxRetirementPercent percent of its ACTIVE and
	// SUSPENDED agents when that is more. When it finds more, it retires none of them, records them
	// as held and stops (SweepResult.Breaker). Zero means the default (DefaultSweepMaxRetirements,
	// DefaultSweepMaxRetirementPercent); -1 turns that bound off (0 retirements, 0 percent).
	MaxRetirements       int `json:",omitempty"`
	MaxRetirementPercent int `json:",omitempty"`
}

// retirementLimit is how many of a tenant's live agents the run may retire.
func (in SweepInput) retirementLimit(live int) int {
	n, pct := max(in.MaxRetirements, 0), max(in.MaxRetirementPercent, 0)
	return max(n, live*pct/100)
}

// SweepFinding is one agent a sweep found, and what it did about it.
type SweepFinding struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name.
	Agent string
	// AgentID is the agent id.
	AgentID string
	// State is the agent's state when the sweep found it.
	State string
	// Reason says why the agent matched (e.g. "expired at ...", "no activity since ...", "no sponsor").
	Reason string
	// Outcome is SweepOutcomeRetired, SweepOutcomeReview or SweepOutcomeChanged.
	Outcome string
	// Trigger is the retirement trigger used (deprovisioning only).
	Trigger string
	// RequestID is the idempotency key of the retirement (deprovisioning only).
	RequestID string
}

// SweepResult is the record of one sweep run: every agent found and what was done.
type SweepResult struct {
	// Kind and Action of the run.
	Kind, Action string
	// ChangeRef is the run's change reference, sweep:<schedule>/<run>: the ticket of every
	// retirement it asked for.
	ChangeRef string
	// Time is the run's reference time (UTC): expiry and inactivity are judged against it.
	Time time.Time
	// Tenants is how many tenants were swept.
	Tenants int
	// Scanned is how many agents were looked at.
	Scanned int
	// Found counts the agents found; Retired, Review, Changed and Held count them by outcome.
	Found, Retired, Review, Changed, Held int
	// NotEnoughTelemetry counts the agents the inactivity sweep did not judge because the monitor's
	// telemetry of their tenant starts after the window does (Notes say from when, per tenant).
	NotEnoughTelemetry int `json:",omitempty"`
	// Notes say what the run did not do and why (one line per tenant), e.g. not enough telemetry.
	Notes []string `json:",omitempty"`
	// Breaker is set when the run's breaker tripped: the tenant, how many agents it would have
	// retired and the limit. The run stopped there.
	Breaker string `json:",omitempty"`
	// Findings are the agents found, in tenant and registration order; at most MaxSweepFindings
	// (Truncated says more were found: each retirement is also on the agent's own history).
	Findings []SweepFinding
	// Truncated is set when more than MaxSweepFindings agents were found.
	Truncated bool
}

// MaxSweepFindings bounds the findings a sweep result lists (the result is kept in the run's history).
const MaxSweepFindings = 2000

// sweepActivityOptions: a page is retried with backoff for half an hour (e.g. while the monitor is
// unreachable), then the run fails and the next scheduled run tries again.
var sweepActivityOptions = workflow.ActivityOptions{
	StartToCloseTimeout:    2 * time.Minute,
	ScheduleToCloseTimeout: 30 * time.Minute,
	RetryPolicy: &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    time.Minute,
	},
}

// normalize fills the defaults of in and checks it.
func (in SweepInput) normalize() (SweepInput, error) {
	bad := func(msg string) (SweepInput, error) {
		return in, temporal.NewNonRetryableApplicationError("sweep: "+msg, "INVALID_ARGUMENT", nil)
	}
	if !slices.Contains(SweepKinds, in.Kind) {
		return bad(fmt.Sprintf("kind %q is not one of %v", in.Kind, SweepKinds))
	}
	switch {
	case in.Action == "" && in.Kind == SweepExpired:
		in.Action = SweepActionDeprovision
	case in.Action == "":
		in.Action = SweepActionReview
	case in.Action != SweepActionReview && in.Action != SweepActionDeprovision:
		return bad(fmt.Sprintf("action %q is neither %s nor %s", in.Action, SweepActionReview, SweepActionDeprovision))
	case in.Kind == SweepExpired && in.Action != SweepActionDeprovision:
		return bad("expired agents are always deprovisioned")
	}
	if in.InactiveDays == 0 {
		in.InactiveDays = DefaultInactiveDays
	}
	if in.InactiveDays < 1 {
		return bad(fmt.Sprintf("inactive days %d must be at least 1", in.InactiveDays))
	}
	if in.Schedule == "" {
		in.Schedule = SweepScheduleID(in.Kind)
	}
	switch {
	case in.MaxRetirements < -1:
		return bad(fmt.Sprintf("max retirements %d must be -1 (off), 0 (default) or more", in.MaxRetirements))
	case in.MaxRetirementPercent < -1 || in.MaxRetirementPercent > 100:
		return bad(fmt.Sprintf("max retirement percent %d must be -1 (off), 0 (default) or up to 100", in.MaxRetirementPercent))
	case in.MaxRetirements == 0:
		in.MaxRetirements = DefaultSweepMaxRetirements
	}
	if in.MaxRetirementPercent == 0 {
		in.MaxRetirementPercent = DefaultSweepMaxRetirementPercent
	}
	return in, nil
}

// SweepTrigger is the retirement trigger of a sweep kind: ttl, inactivity or owner_departed.
func SweepTrigger(kind string) string {
	switch kind {
	case SweepExpired:
		return TriggerTTL
	case SweepInactive:
		return TriggerInactivity
	default:
		return TriggerOwnerDeparted
	}
}

// sweepChangeRef is sweep:<schedule>/<run>, where run is the scheduled time a Schedule appends to its
// id in the workflow id, or the whole workflow id of a run started by hand.
func sweepChangeRef(schedule, workflowID string) string {
	return "sweep:" + schedule + "/" + strings.TrimPrefix(workflowID, schedule+"-")
}

// SweepWorkflow runs one sweep: it pages through the agents of every tenant (or of in.Tenants) and
// records each agent that matches in.Kind; with SweepActionDeprovision it retires them (trigger ttl,
// inactivity or owner_departed, ticket sweep:<schedule>/<run>, request id derived from the run and
// the agent), which starts their deprovisioning sagas. A tenant's agents are retired only after all
// its pages were read, and only when they are no more than the run's breaker allows
// (SweepInput.MaxRetirements, MaxRetirementPercent): otherwise none is retired, they are recorded
// as held and the run stops. The result lists every agent found and what was done. Retirements are
// idempotent: a retried activity asks for the same retirements again.
func SweepWorkflow(ctx workflow.Context, in SweepInput) (SweepResult, error) {
	in, err := in.normalize()
	if err != nil {
		return SweepResult{}, err
	}
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	res := SweepResult{Kind: in.Kind, Action: in.Action, ChangeRef: sweepChangeRef(in.Schedule, id), Time: workflow.Now(ctx).UTC()}
	actx := workflow.WithActivityOptions(ctx, sweepActivityOptions)
	breaker := workflow.GetVersion(ctx, versionSweepBreaker, workflow.DefaultVersion, 1) >= 1
	tenants := in.Tenants
	if len(tenants) == 0 {
		if err := workflow.ExecuteActivity(actx, acts.ListSweepTenants).Get(ctx, &tenants); err != nil {
			return res, err
		}
	}
	for _, tenant := range tenants {
		res.Tenants++
		token := ""
		live, notJudged := 0, 0
		var coverage time.Time
		var candidates []SweepFinding
		for {
			var page SweepPageResult
			err := workflow.ExecuteActivity(actx, acts.SweepPage, SweepPageRequest{
				Kind: in.Kind, Action: in.Action, Tenant: tenant, PageToken: token, Now: res.Time,
				InactiveDays: in.InactiveDays, ChangeRef: res.ChangeRef, RunID: id, FindOnly: breaker,
			}).Get(ctx, &page)
			if err != nil {
				return res, err
			}
			res.Scanned += page.Scanned
			live += page.Live
			notJudged += page.NotEnoughTelemetry
			if !page.CoverageStart.IsZero() {
				coverage = page.CoverageStart
			}
			for _, f := range page.Findings {
				if f.Outcome == SweepOutcomeCandidate {
					candidates = append(candidates, f)
				} else {
					res.add(f)
				}
			}
			if page.NextPageToken == "" {
				break
			}
			token = page.NextPageToken
		}
		if notJudged > 0 {
			res.NotEnoughTelemetry += notJudged
			res.Notes = append(res.Notes, notEnoughTelemetryNote(tenant, notJudged, coverage))
		}
		if len(candidates) == 0 {
			continue
		}
		if limit := in.retirementLimit(live); len(candidates) > limit {
			for _, f := range candidates {
				f.Outcome = SweepOutcomeHeld
				res.add(f)
			}
			res.Breaker = fmt.Sprintf("tenant %s: %d agents to retire, more than this run may retire (%d: at most %d agents or %d%% of its %d live agents); none retired, the run stopped",
				tenant, len(candidates), limit, max(in.MaxRetirements, 0), max(in.MaxRetirementPercent, 0), live)
			workflow.GetLogger(ctx).Warn("sweep breaker tripped", "kind", res.Kind, "change_ref", res.ChangeRef, "breaker", res.Breaker)
			return res, nil
		}
		expireFirst := in.Kind == SweepExpired && workflow.GetVersion(ctx, versionSweepExpireFirst, workflow.DefaultVersion, 1) >= 1
		for chunk := range slices.Chunk(candidates, SweepPageSize) {
			var done []SweepFinding
			if err := workflow.ExecuteActivity(actx, acts.RetireSweepAgents, RetireSweepRequest{
				Kind: in.Kind, ChangeRef: res.ChangeRef, RunID: id, Findings: chunk, ExpireFirst: expireFirst,
			}).Get(ctx, &done); err != nil {
				return res, err
			}
			for _, f := range done {
				res.add(f)
			}
		}
	}
	workflow.GetLogger(ctx).Info("sweep done", "kind", res.Kind, "action", res.Action, "change_ref", res.ChangeRef,
		"tenants", res.Tenants, "scanned", res.Scanned, "found", res.Found, "retired", res.Retired,
		"not_enough_telemetry", res.NotEnoughTelemetry)
	return res, nil
}

// notEnoughTelemetryNote says that n agents of tenant were not judged, the monitor's telemetry
// starting at coverage (zero: none).
func notEnoughTelemetryNote(tenant string, n int, coverage time.Time) string {
	from := "the monitor holds no telemetry of the tenant"
	if !coverage.IsZero() {
		from = "the monitor's telemetry of the tenant starts at " + coverage.UTC().Format(time.RFC3339) + ", after the window does"
	}
	return fmt.Sprintf("tenant %s: %d agents not judged, not enough telemetry (%s)", tenant, n, from)
}

// add counts f and lists it while there is room.
func (r *SweepResult) add(f SweepFinding) {
	r.Found++
	switch f.Outcome {
	case SweepOutcomeRetired:
		r.Retired++
	case SweepOutcomeReview:
		r.Review++
	case SweepOutcomeChanged:
		r.Changed++
	case SweepOutcomeHeld:
		r.Held++
	}
	if len(r.Findings) < MaxSweepFindings {
		r.Findings = append(r.Findings, f)
	} else {
		r.Truncated = true
	}
}
