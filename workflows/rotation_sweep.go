package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// RotationSweepWorkflowName is the registered name of RotationSweepWorkflow.
const RotationSweepWorkflowName = "RotationSweepWorkflow"

// RotationSweepScheduleID is the id of the daily Temporal Schedule running RotationSweepWorkflow.
const RotationSweepScheduleID = "sweep-rotation"

// Default rotation due days by risk tier (RotationDueDays), counted from the add time of the
// agent's current key.
const (
	DefaultRotationDueDaysLow      = 90
	DefaultRotationDueDaysModerate = 30
	DefaultRotationDueDaysHigh     = 7
	DefaultRotationDueDaysCritical = 7
)

// DefaultRotationRemindDays is how many days before its due date a key is reminded.
const DefaultRotationRemindDays = 7

// MaxRotationDueDays bounds every due-days setting (ten years).
const MaxRotationDueDays = 3650

// Statuses of a key a rotation sweep reminds (RotationReminder.Status).
const (
	// RotationDue: the key's due date is within the reminder window.
	RotationDue = "due"
	// RotationOverdue: the key's due date has passed.
	RotationOverdue = "overdue"
)

// Notification kinds of rotation reminders (Notification.Kind).
const (
	NotificationRotationDue     = "rotation.due"
	NotificationRotationOverdue = "rotation.overdue"
)

// RotationDueDays is how many days an agent's current key may be used, by risk tier, before it is
// due for rotation. Zero fields take the defaults. An unclassified agent takes the strictest of
// High and Critical.
type RotationDueDays struct {
	Low, Moderate, High, Critical int
}

// WithDefaults fills the zero fields.
func (d RotationDueDays) WithDefaults() RotationDueDays {
	for _, f := range []struct {
		v   *int
		def int
	}{{&d.Low, DefaultRotationDueDaysLow}, {&d.Moderate, DefaultRotationDueDaysModerate}, {&d.High, DefaultRotationDueDaysHigh}, {&d.Critical, DefaultRotationDueDaysCritical}} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return d
}

// Validate says which tier's days are out of range (after defaults).
func (d RotationDueDays) Validate() error {
	d = d.WithDefaults()
	for _, f := range []struct {
		tier string
		v    int
	}{{"low", d.Low}, {"moderate", d.Moderate}, {"high", d.High}, {"critical", d.Critical}} {
		if f.v < 1 || f.v > MaxRotationDueDays {
			return fmt.Errorf("rotation due days of tier %s: %d is not between 1 and %d", f.tier, f.v, MaxRotationDueDays)
		}
	}
	return nil
}

// For returns the due days of a risk tier name (RiskTierName: low, moderate, high, critical;
// anything else is unclassified and takes the strictest of high and critical).
func (d RotationDueDays) For(tier string) int {
	d = d.WithDefaults()
	switch tier {
	case "low":
		return d.Low
	case "moderate":
		return d.Moderate
	case "high":
		return d.High
	case "critical":
		return d.Critical
	default:
		return min(d.High, d.Critical)
	}
}

// RotationSweepInput configures one rotation sweep run (the Schedule's action carries it).
type RotationSweepInput struct {
	// DueDays are the due days by risk tier (zero fields: defaults).
	DueDays RotationDueDays
	// RemindDays is how many days before its due date a key is reminded (default
	// DefaultRotationRemindDays).
	RemindDays int
	// Schedule is the id of the Schedule that started the run (default RotationSweepScheduleID).
	Schedule string
	// Tenants restricts the sweep to these tenants; empty sweeps every tenant the registry lists.
	Tenants []string
}

// normalize fills the defaults of in and checks it.
func (in RotationSweepInput) normalize() (RotationSweepInput, error) {
	in.DueDays = in.DueDays.WithDefaults()
	if err := in.DueDays.Validate(); err != nil {
		return in, temporal.NewNonRetryableApplicationError("rotation sweep: "+err.Error(), "INVALID_ARGUMENT", nil)
	}
	if in.RemindDays == 0 {
		in.RemindDays = DefaultRotationRemindDays
	}
	if in.RemindDays < 1 || in.RemindDays > MaxRotationDueDays {
		return in, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("rotation sweep: remind days %d is not between 1 and %d", in.RemindDays, MaxRotationDueDays), "INVALID_ARGUMENT", nil)
	}
	if in.Schedule == "" {
		in.Schedule = RotationSweepScheduleID
	}
	return in, nil
}

// RotationReminder is one key due (or overdue) for rotation and the reminder sent about it.
type RotationReminder struct {
	// Tenant of the agent.
	Tenant string
	// Agent is the resource name; AgentID the agent id.
	Agent, AgentID string
	// Owner is the agent's owner as the registry holds it (the recipient).
	Owner string
	// RiskTier is the agent's risk tier name (RiskTierName).
	RiskTier string
	// Key is the thumbprint of the agent's current key (its newest).
	Key string
	// KeyAddTime is when that key was added; DueTime when it is due for rotation.
	KeyAddTime, DueTime time.Time
	// Status is RotationDue or RotationOverdue.
	Status string
	// NotificationID is the id of the reminder (a retried delivery repeats it): the record of the
	// reminder in the owner's notification channel.
	NotificationID string
	// Delivered says whether the notifier accepted it; Detail says why not.
	Delivered bool
	Detail    string
}

// RotationSweepResult is the record of one rotation sweep run: every key due or overdue and the
// reminder sent about it.
type RotationSweepResult struct {
	// ChangeRef is sweep:<schedule>/<run>.
	ChangeRef string
	// Time is the run's reference time (UTC): due dates are judged against it.
	Time time.Time
	// Tenants is how many tenants were swept; Scanned how many agents were looked at.
	Tenants, Scanned int
	// Due and Overdue count the keys by status; Delivered counts the reminders the notifier accepted.
	Due, Overdue, Delivered int
	// Reminders are the keys reminded, in tenant and registration order; at most MaxSweepFindings
	// (Truncated says more were found).
	Reminders []RotationReminder
	// Truncated is set when more than MaxSweepFindings keys were reminded.
	Truncated bool
}

// add counts r and lists it while there is room.
func (res *RotationSweepResult) add(r RotationReminder) {
	switch r.Status {
	case RotationOverdue:
		res.Overdue++
	default:
		res.Due++
	}
	if r.Delivered {
		res.Delivered++
	}
	if len(res.Reminders) < MaxSweepFindings {
		res.Reminders = append(res.Reminders, r)
	} else {
		res.Truncated = true
	}
}

// RotationSweepWorkflow runs one rotation sweep: it pages through the agents of every tenant (or of
// in.Tenants), finds each ACTIVE agent whose current key (its newest) is due for rotation within
// in.RemindDays or overdue (due = key add time + the due days of the agent's risk tier), and
// reminds the agent's owner through the notifier (one notification per key and run, id
// <run>/<agent id>/<thumbprint>). The result records every reminder with its notification id. It
// fails closed: a registry that cannot answer fails the page (retried with backoff, then the run
// fails); it is never taken for "nothing due".
func RotationSweepWorkflow(ctx workflow.Context, in RotationSweepInput) (RotationSweepResult, error) {
	in, err := in.normalize()
	if err != nil {
		return RotationSweepResult{}, err
	}
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	res := RotationSweepResult{ChangeRef: sweepChangeRef(in.Schedule, id), Time: workflow.Now(ctx).UTC()}
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
			var page RotationDuePageResult
			err := workflow.ExecuteActivity(actx, acts.RotationDuePage, RotationDuePageRequest{
				Tenant: tenant, PageToken: token, Now: res.Time, DueDays: in.DueDays, RemindDays: in.RemindDays,
			}).Get(ctx, &page)
			if err != nil {
				return res, err
			}
			res.Scanned += page.Scanned
			if len(page.Due) > 0 {
				var sent []RotationReminder
				if err := workflow.ExecuteActivity(actx, acts.RemindRotation, RotationRemindRequest{
					RunID: id, ChangeRef: res.ChangeRef, Reminders: page.Due,
				}).Get(ctx, &sent); err != nil {
					return res, err
				}
				for _, r := range sent {
					res.add(r)
				}
			}
			if page.NextPageToken == "" {
				break
			}
			token = page.NextPageToken
		}
	}
	workflow.GetLogger(ctx).Info("rotation sweep done", "change_ref", res.ChangeRef, "tenants", res.Tenants,
		"scanned", res.Scanned, "due", res.Due, "overdue", res.Overdue, "delivered", res.Delivered)
	return res, nil
}
