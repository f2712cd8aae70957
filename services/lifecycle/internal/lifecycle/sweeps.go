package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/workflows"
)

// Default intervals of the sweeps' Schedules.
const (
	// DefaultSweepExpiredEvery is how often expired agents are swept.
	DefaultSweepExpiredEvery = time.Hour
	// DefaultSweepInactiveEvery is how often inactive agents are swept.
	DefaultSweepInactiveEvery = 24 * time.Hour
	// DefaultSweepOrphanedEvery is how often orphaned agents are swept.
	DefaultSweepOrphanedEvery = 24 * time.Hour
	// MinSweepEvery is the shortest interval of a sweep.
	MinSweepEvery = time.Minute
)

// SweepConfig configures the sweeps the lifecycle service schedules (Temporal Schedules
// sweep-expired, sweep-inactive and sweep-orphaned running workflows.SweepWorkflow).
type SweepConfig struct {
	// ExpiredEvery is the interval of the expired sweep (default DefaultSweepExpiredEvery; negative:
	// no such sweep, and its Schedule is deleted).
	ExpiredEvery time.Duration
	// InactiveEvery is the interval of the inactivity sweep (default DefaultSweepInactiveEvery;
	// negative: none).
	InactiveEvery time.Duration
	// OrphanedEvery is the interval of the orphan sweep (default DefaultSweepOrphanedEvery; negative:
	// none).
	OrphanedEvery time.Duration
	// InactiveDays is how long an agent may go without activity (default workflows.DefaultInactiveDays).
	InactiveDays int
	// InactiveAction is what the inactivity sweep does: workflows.SweepActionReview (default) or
	// workflows.SweepActionDeprovision.
	InactiveAction string
	// OrphanedAction is what the orphan sweep does: review (default) or deprovision.
	OrphanedAction string
	// MaxRetirements and MaxRetirementPercent are every sweep run's breaker
	// (workflows.SweepInput.MaxRetirements, MaxRetirementPercent): a deprovisioning run retires in a
	// tenant at most MaxRetirements agents, or MaxRetirementPercent percent of its live agents when
	// that is more; finding more, it retires none and stops. 0 is the default
	// (workflows.DefaultSweepMaxRetirements, DefaultSweepMaxRetirementPercent); -1 allows none by
	// that bound.
	MaxRetirements       int
	MaxRetirementPercent int
}

// sweepSchedule is one sweep kind's Schedule.
type sweepSchedule struct {
	every time.Duration
	in    workflows.SweepInput
}

// WithDefaults fills the unset fields.
func (c SweepConfig) WithDefaults() SweepConfig {
	if c.ExpiredEvery == 0 {
		c.ExpiredEvery = DefaultSweepExpiredEvery
	}
	if c.InactiveEvery == 0 {
		c.InactiveEvery = DefaultSweepInactiveEvery
	}
	if c.OrphanedEvery == 0 {
		c.OrphanedEvery = DefaultSweepOrphanedEvery
	}
	if c.InactiveDays == 0 {
		c.InactiveDays = workflows.DefaultInactiveDays
	}
	if c.InactiveAction == "" {
		c.InactiveAction = workflows.SweepActionReview
	}
	if c.OrphanedAction == "" {
		c.OrphanedAction = workflows.SweepActionReview
	}
	return c
}

// Validate checks the configuration (after defaults); errors name the field.
func (c SweepConfig) Validate() error {
	c = c.WithDefaults()
	for _, f := range []struct {
		name  string
		every time.Duration
	}{{"sweep_expired_every", c.ExpiredEvery}, {"sweep_inactive_every", c.InactiveEvery}, {"sweep_orphaned_every", c.OrphanedEvery}} {
		if f.every > 0 && f.every < MinSweepEvery {
			return errs.InvalidArgument(f.name, fmt.Sprintf("%s must be at least %s (or negative for no sweep)", f.name, MinSweepEvery))
		}
	}
	if c.InactiveDays < 1 {
		return errs.InvalidArgument("sweep_inactive_days", "sweep_inactive_days must be at least 1")
	}
	if c.MaxRetirements < -1 {
		return errs.InvalidArgument("sweep_max_retirements", fmt.Sprintf("sweep_max_retirements %d must be -1 (none), 0 (default %d) or more", c.MaxRetirements, workflows.DefaultSweepMaxRetirements))
	}
	if c.MaxRetirementPercent < -1 || c.MaxRetirementPercent > 100 {
		return errs.InvalidArgument("sweep_max_retirement_percent", fmt.Sprintf("sweep_max_retirement_percent %d must be -1 (none), 0 (default %d) or up to 100", c.MaxRetirementPercent, workflows.DefaultSweepMaxRetirementPercent))
	}
	for _, f := range []struct{ name, v string }{{"sweep_inactive_action", c.InactiveAction}, {"sweep_orphaned_action", c.OrphanedAction}} {
		if f.v != workflows.SweepActionReview && f.v != workflows.SweepActionDeprovision {
			return errs.InvalidArgument(f.name, fmt.Sprintf("%s %q is neither %s nor %s", f.name, f.v, workflows.SweepActionReview, workflows.SweepActionDeprovision))
		}
	}
	return nil
}

// schedules are the Schedules of c, by kind in workflows.SweepKinds order.
func (c SweepConfig) schedules() []sweepSchedule {
	c = c.WithDefaults()
	out := []sweepSchedule{
		{c.ExpiredEvery, workflows.SweepInput{Kind: workflows.SweepExpired, Action: workflows.SweepActionDeprovision}},
		{c.InactiveEvery, workflows.SweepInput{Kind: workflows.SweepInactive, Action: c.InactiveAction, InactiveDays: c.InactiveDays}},
		{c.OrphanedEvery, workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: c.OrphanedAction}},
	}
	for i := range out {
		out[i].in.MaxRetirements, out[i].in.MaxRetirementPercent = c.MaxRetirements, c.MaxRetirementPercent
	}
	return out
}

// describe is how a sweep Schedule's configuration reads in the logs.
func (s sweepSchedule) describe() string {
	return fmt.Sprintf("every=%s action=%s inactive_days=%d max_retirements=%d max_retirement_percent=%d",
		s.every, s.in.Action, s.in.InactiveDays, s.in.MaxRetirements, s.in.MaxRetirementPercent)
}

// describeStored is the configuration of a stored sweep Schedule, read like describe; what cannot
// be read says so.
func describeStored(sched client.Schedule) string {
	var every time.Duration
	if sched.Spec != nil && len(sched.Spec.Intervals) == 1 {
		every = sched.Spec.Intervals[0].Every
	} else if sched.Spec != nil {
		return fmt.Sprintf("an unexpected spec (%d intervals, %d calendars, %d cron expressions)",
			len(sched.Spec.Intervals), len(sched.Spec.Calendars), len(sched.Spec.CronExpressions))
	}
	a, ok := sched.Action.(*client.ScheduleWorkflowAction)
	if !ok || len(a.Args) != 1 {
		return fmt.Sprintf("every=%s and an unexpected action %T", every, sched.Action)
	}
	var in workflows.SweepInput
	p, ok := a.Args[0].(*commonpb.Payload)
	if !ok {
		return fmt.Sprintf("every=%s and an unexpected argument %T", every, a.Args[0])
	}
	if err := converter.GetDefaultDataConverter().FromPayload(p, &in); err != nil {
		return fmt.Sprintf("every=%s and an unreadable input (%v)", every, err)
	}
	return sweepSchedule{every: every, in: in}.describe()
}

// changedScheduleWarning is logged when a replica changes, or deletes, an existing sweep Schedule:
// the Schedules are shared, the last replica to start wins.
const changedScheduleWarning = "sweep schedule changed by this replica: every lifecycle replica must run with the same sweep flags, or each one's start sets its own (docs/deprovisioning.md)"

// sweepRunTimeout bounds one sweep run (its pages retry for half an hour each at most).
const sweepRunTimeout = 6 * time.Hour

// EnsureSweepSchedules creates the sweeps' Schedules (ids workflows.SweepScheduleID(kind)), or
// updates those that exist to cfg (interval, action, threshold; a pause set by an operator is kept),
// and deletes those cfg turns off. Runs of one Schedule never overlap (a run still going when the
// next is due makes that one skipped). Calling it again with the same cfg changes nothing.
func EnsureSweepSchedules(ctx context.Context, sc client.ScheduleClient, taskQueue string, cfg SweepConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.Default()
	}
	for _, s := range cfg.schedules() {
		id := workflows.SweepScheduleID(s.in.Kind)
		s.in.Schedule = id
		if s.every < 0 {
			h := sc.GetHandle(ctx, id)
			var nf *serviceerror.NotFound
			d, err := h.Describe(ctx)
			if errors.As(err, &nf) {
				continue
			}
			if err != nil {
				return fmt.Errorf("describe schedule %s: %w", id, err)
			}
			if err := h.Delete(ctx); err != nil && !errors.As(err, &nf) {
				return fmt.Errorf("delete schedule %s: %w", id, err)
			}
			log.WarnContext(ctx, changedScheduleWarning, "schedule_id", id, "previous", describeStored(d.Schedule), "configured", "off")
			continue
		}
		spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: s.every}}}
		action := &client.ScheduleWorkflowAction{
			ID: id, Workflow: workflows.SweepWorkflowName, Args: []any{s.in}, TaskQueue: taskQueue,
			WorkflowExecutionTimeout: sweepRunTimeout,
		}
		_, err := sc.Create(ctx, client.ScheduleOptions{
			ID: id, Spec: spec, Action: action, Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
			Note: "agentid lifecycle sweep (docs/deprovisioning.md)",
		})
		switch {
		case err == nil:
			log.InfoContext(ctx, "sweep schedule created", "schedule_id", id, "configured", s.describe())
			continue
		case !errors.Is(err, temporal.ErrScheduleAlreadyRunning):
			return fmt.Errorf("create schedule %s: %w", id, err)
		}
		previous := ""
		err = sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(u client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				sched := u.Description.Schedule
				previous = describeStored(sched)
				sched.Spec, sched.Action = &spec, action
				if sched.Policy == nil {
					sched.Policy = &client.SchedulePolicies{}
				}
				sched.Policy.Overlap = enumspb.SCHEDULE_OVERLAP_POLICY_SKIP
				return &client.ScheduleUpdate{Schedule: &sched}, nil
			},
		})
		if err != nil {
			return fmt.Errorf("update schedule %s: %w", id, err)
		}
		if configured := s.describe(); previous != configured {
			log.WarnContext(ctx, changedScheduleWarning, "schedule_id", id, "previous", previous, "configured", configured)
			continue
		}
		log.DebugContext(ctx, "sweep schedule unchanged", "schedule_id", id, "configured", previous)
	}
	return nil
}
