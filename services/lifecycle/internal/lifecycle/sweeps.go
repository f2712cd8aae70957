package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
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
	return []sweepSchedule{
		{c.ExpiredEvery, workflows.SweepInput{Kind: workflows.SweepExpired, Action: workflows.SweepActionDeprovision}},
		{c.InactiveEvery, workflows.SweepInput{Kind: workflows.SweepInactive, Action: c.InactiveAction, InactiveDays: c.InactiveDays}},
		{c.OrphanedEvery, workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: c.OrphanedAction}},
	}
}

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
			err := sc.GetHandle(ctx, id).Delete(ctx)
			var nf *serviceerror.NotFound
			if err != nil && !errors.As(err, &nf) {
				return fmt.Errorf("delete schedule %s: %w", id, err)
			}
			if err == nil {
				log.InfoContext(ctx, "sweep schedule deleted (turned off)", "schedule_id", id)
			}
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
			log.InfoContext(ctx, "sweep schedule created", "schedule_id", id, "every", s.every.String(), "action", s.in.Action)
			continue
		case !errors.Is(err, temporal.ErrScheduleAlreadyRunning):
			return fmt.Errorf("create schedule %s: %w", id, err)
		}
		err = sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(u client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				sched := u.Description.Schedule
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
		log.InfoContext(ctx, "sweep schedule updated", "schedule_id", id, "every", s.every.String(), "action", s.in.Action)
	}
	return nil
}
