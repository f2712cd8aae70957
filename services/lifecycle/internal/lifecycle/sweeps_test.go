package lifecycle_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// TestEnsureSweepSchedules: the sweeps' Schedules are created at start with the default intervals,
// updated in place when the configuration changes (a pause set by an operator is kept), deleted when
// turned off, and a second call with the same configuration changes nothing.
func TestEnsureSweepSchedules(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := c.ScheduleClient()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)

	type want struct {
		every  time.Duration
		action string
		days   int
	}
	check := func(t *testing.T, kind string, w want) *client.ScheduleDescription {
		t.Helper()
		d, err := sc.GetHandle(ctx, workflows.SweepScheduleID(kind)).Describe(ctx)
		if err != nil {
			t.Fatalf("describe %s: %v", kind, err)
		}
		if iv := d.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != w.every {
			t.Errorf("%s: intervals %+v, want every %s", kind, iv, w.every)
		}
		if d.Schedule.Policy.Overlap != enumspb.SCHEDULE_OVERLAP_POLICY_SKIP {
			t.Errorf("%s: overlap %s, want skip", kind, d.Schedule.Policy.Overlap)
		}
		a, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || a.Workflow != workflows.SweepWorkflowName || a.TaskQueue != workflows.TaskQueue || len(a.Args) != 1 {
			t.Fatalf("%s: action %+v", kind, d.Schedule.Action)
		}
		p, ok := a.Args[0].(*commonpb.Payload)
		if !ok {
			t.Fatalf("%s: argument %T", kind, a.Args[0])
		}
		var in workflows.SweepInput
		if err := converter.GetDefaultDataConverter().FromPayload(p, &in); err != nil {
			t.Fatal(err)
		}
		if in.Kind != kind || in.Action != w.action || in.Schedule != workflows.SweepScheduleID(kind) || (kind == workflows.SweepInactive && in.InactiveDays != w.days) {
			t.Errorf("%s: input %+v, want action %s (%d days)", kind, in, w.action, w.days)
		}
		return d
	}

	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, lifecycle.SweepConfig{}, log); err != nil {
		t.Fatal(err)
	}
	check(t, workflows.SweepExpired, want{time.Hour, workflows.SweepActionDeprovision, 0})
	check(t, workflows.SweepInactive, want{24 * time.Hour, workflows.SweepActionReview, 90})
	check(t, workflows.SweepOrphaned, want{24 * time.Hour, workflows.SweepActionReview, 0})

	// The same configuration again (a restart): nothing changes.
	before, err := sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepExpired)).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, lifecycle.SweepConfig{}, log); err != nil {
		t.Fatalf("second start: %v", err)
	}
	after := check(t, workflows.SweepExpired, want{time.Hour, workflows.SweepActionDeprovision, 0})
	if !after.Info.CreatedAt.Equal(before.Info.CreatedAt) {
		t.Errorf("the schedule was created again: %s, then %s", before.Info.CreatedAt, after.Info.CreatedAt)
	}

	// An operator pauses the inactivity sweep; the configuration changes: updated in place, still
	// paused; the orphan sweep is turned off.
	if err := sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepInactive)).Pause(ctx, client.SchedulePauseOptions{Note: "audit week"}); err != nil {
		t.Fatal(err)
	}
	cfg := lifecycle.SweepConfig{ExpiredEvery: 10 * time.Minute, InactiveEvery: 2 * time.Hour, InactiveDays: 30,
		InactiveAction: workflows.SweepActionDeprovision, OrphanedEvery: -1}
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, cfg, log); err != nil {
		t.Fatal(err)
	}
	check(t, workflows.SweepExpired, want{10 * time.Minute, workflows.SweepActionDeprovision, 0})
	d := check(t, workflows.SweepInactive, want{2 * time.Hour, workflows.SweepActionDeprovision, 30})
	if !d.Schedule.State.Paused {
		t.Error("the operator's pause was lifted by the update")
	}
	_, err = sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepOrphaned)).Describe(ctx)
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("orphan sweep turned off: describe err = %v, want NotFound", err)
	}
	// Turned off twice: still fine.
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, cfg, log); err != nil {
		t.Fatal(err)
	}
}

func TestSweepConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   lifecycle.SweepConfig
		field string // "" wants no error
	}{
		{"defaults", lifecycle.SweepConfig{}, ""},
		{"all off", lifecycle.SweepConfig{ExpiredEvery: -1, InactiveEvery: -1, OrphanedEvery: -1}, ""},
		{"deprovision", lifecycle.SweepConfig{InactiveAction: "deprovision", OrphanedAction: "deprovision", InactiveDays: 1}, ""},
		{"too often", lifecycle.SweepConfig{ExpiredEvery: 30 * time.Second}, "sweep_expired_every"},
		{"inactive too often", lifecycle.SweepConfig{InactiveEvery: time.Second}, "sweep_inactive_every"},
		{"negative days", lifecycle.SweepConfig{InactiveDays: -3}, "sweep_inactive_days"},
		{"unknown inactive action", lifecycle.SweepConfig{InactiveAction: "delete"}, "sweep_inactive_action"},
		{"unknown orphan action", lifecycle.SweepConfig{OrphanedAction: "notify"}, "sweep_orphaned_action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want one naming %s", err, tt.field)
			}
		})
	}
}
