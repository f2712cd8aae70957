package app

import (
	"context"
	"time"

	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// runSweepSchedules creates or updates the sweeps' Temporal Schedules (lifecycle.EnsureSweepSchedules)
// once at start, retrying while Temporal is unreachable, and then returns.
func (a *App) runSweepSchedules(ctx context.Context) error {
	delay := workerRetryMin
	for {
		err := lifecycle.EnsureSweepSchedules(ctx, a.temporal.ScheduleClient(), a.cfg.TaskQueue, a.cfg.Sweeps, a.log)
		if err == nil {
			err = lifecycle.EnsureReviewSchedule(ctx, a.temporal.ScheduleClient(), a.cfg.TaskQueue, a.cfg.Reviews, a.log)
		}
		if err == nil {
			err = lifecycle.EnsureRotationSweepSchedule(ctx, a.temporal.ScheduleClient(), a.cfg.TaskQueue, a.cfg.RotationSweep, a.log)
		}
		if err == nil {
			return nil
		}
		a.log.WarnContext(ctx, "sweep schedules cannot be set up yet; retrying", "retry_in", delay.String(), "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, workerRetryMax)
	}
}
