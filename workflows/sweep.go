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
	// SweepExpired finds ACTIVE or SUSPENDED agents whose expire time has passed (a missed TTL timer)
	// and retires them with trigger ttl.
	SweepExpired = "expired"
	// SweepInactive finds ACTIVE agents without activity for SweepInput.InactiveDays (from the
	// monitor's telemetry).
	SweepInactive = "inactive"
	// SweepOrphaned finds ACTIVE or SUSPENDED agents without an owner or without a sponsor.
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
	// Found counts the agents found; Retired, Review and Changed count them by outcome.
	Found, Retired, Review, Changed int
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
// records each agent that matches in.Kind; with SweepActionDeprovision it retires it (trigger ttl,
// inactivity or owner_departed, ticket sweep:<schedule>/<run>, request id derived from the run and
// the agent), which starts its deprovisioning saga. The result lists every agent found and what was
// done. Pages are idempotent: a page retried after a failure asks for the same retirements again.
func SweepWorkflow(ctx workflow.Context, in SweepInput) (SweepResult, error) {
	in, err := in.normalize()
	if err != nil {
		return SweepResult{}, err
	}
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	res := SweepResult{Kind: in.Kind, Action: in.Action, ChangeRef: sweepChangeRef(in.Schedule, id), Time: workflow.Now(ctx).UTC()}
	actx := workflow.WithActivityOptions(ctx, sweepActivityOptions)
	tenants := in.Tenants
	if len(tenants) == 0 {
		if err := workflow.ExecuteActivity(actx, acts.ListSweepTenants).Get(ctx, &tenants); err != nil {
			return res, err
		}
	}
	for _, tenant := range tenants {
		res.Tenants++
		token := ""
		for {
			var page SweepPageResult
			err := workflow.ExecuteActivity(actx, acts.SweepPage, SweepPageRequest{
				Kind: in.Kind, Action: in.Action, Tenant: tenant, PageToken: token, Now: res.Time,
				InactiveDays: in.InactiveDays, ChangeRef: res.ChangeRef, RunID: id,
			}).Get(ctx, &page)
			if err != nil {
				return res, err
			}
			res.Scanned += page.Scanned
			for _, f := range page.Findings {
				res.add(f)
			}
			if page.NextPageToken == "" {
				break
			}
			token = page.NextPageToken
		}
	}
	workflow.GetLogger(ctx).Info("sweep done", "kind", res.Kind, "action", res.Action, "change_ref", res.ChangeRef,
		"tenants", res.Tenants, "scanned", res.Scanned, "found", res.Found, "retired", res.Retired)
	return res, nil
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
	}
	if len(r.Findings) < MaxSweepFindings {
		r.Findings = append(r.Findings, f)
	} else {
		r.Truncated = true
	}
}
