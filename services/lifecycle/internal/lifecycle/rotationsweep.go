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

// DefaultRotationSweepEvery is how often keys due for rotation are swept (daily).
const DefaultRotationSweepEvery = 24 * time.Hour

// RotationSweepConfig configures the Schedule workflows.RotationSweepScheduleID (sweep-rotation)
// reminding owners of agent keys due for rotation.
type RotationSweepConfig struct {
	// Every is the sweep's interval (default DefaultRotationSweepEvery; negative: no sweep, and its
	// Schedule is deleted).
	Every time.Duration
	// DueDays are the days a key may be used by risk tier (zero fields: the workflows defaults, low 90,
	// moderate 30, high 7, critical 7).
	DueDays workflows.RotationDueDays
	// RemindDays is how many days before its due date a key is reminded (0:
	// workflows.DefaultRotationRemindDays).
	RemindDays int
}

// Validate checks c; errors name the field.
func (c RotationSweepConfig) Validate() error {
	if c.Every > 0 && c.Every < MinSweepEvery {
		return errs.InvalidArgument("sweep_rotation_every", fmt.Sprintf("sweep_rotation_every must be at least %s (or negative for no sweep)", MinSweepEvery))
	}
	if err := c.DueDays.Validate(); err != nil {
		return errs.InvalidArgument("rotation_due_days", err.Error())
	}
	if c.RemindDays < 0 || c.RemindDays > workflows.MaxRotationDueDays {
		return errs.InvalidArgument("rotation_remind_days", fmt.Sprintf("rotation_remind_days %d is not between 1 and %d (0: %d)", c.RemindDays, workflows.MaxRotationDueDays, workflows.DefaultRotationRemindDays))
	}
	return nil
}

// EnsureRotationSweepSchedule creates the Schedule sweep-rotation running
// workflows.RotationSweepWorkflow every cfg.Every with cfg's due days, or updates it to cfg (a pause
// set by an operator is kept); a negative interval deletes it. Runs never overlap. Calling it again
// with the same cfg changes nothing.
func EnsureRotationSweepSchedule(ctx context.Context, sc client.ScheduleClient, taskQueue string, cfg RotationSweepConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.Default()
	}
	id := workflows.RotationSweepScheduleID
	if cfg.Every < 0 {
		err := sc.GetHandle(ctx, id).Delete(ctx)
		var nf *serviceerror.NotFound
		if err != nil && !errors.As(err, &nf) {
			return fmt.Errorf("delete schedule %s: %w", id, err)
		}
		if err == nil {
			log.InfoContext(ctx, "rotation sweep schedule deleted (turned off)", "schedule_id", id)
		}
		return nil
	}
	every := cfg.Every
	if every == 0 {
		every = DefaultRotationSweepEvery
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	action := &client.ScheduleWorkflowAction{
		ID: id, Workflow: workflows.RotationSweepWorkflowName, TaskQueue: taskQueue, WorkflowExecutionTimeout: sweepRunTimeout,
		Args: []any{workflows.RotationSweepInput{DueDays: cfg.DueDays.WithDefaults(), RemindDays: cfg.RemindDays, Schedule: id}},
	}
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: id, Spec: spec, Action: action, Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Note: "agentid rotation reminders (docs/rotation.md)",
	})
	switch {
	case err == nil:
		log.InfoContext(ctx, "rotation sweep schedule created", "schedule_id", id, "every", every.String())
		return nil
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
	log.InfoContext(ctx, "rotation sweep schedule updated", "schedule_id", id, "every", every.String())
	return nil
}
