package lifecycle_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// TestEnsureRotationSweepSchedule: the daily Schedule sweep-rotation is created with the default due
// days, updated in place to new ones, and deleted when turned off.
func TestEnsureRotationSweepSchedule(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := c.ScheduleClient()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	h := sc.GetHandle(ctx, workflows.RotationSweepScheduleID)

	check := func(t *testing.T, every time.Duration, want workflows.RotationSweepInput) {
		t.Helper()
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if iv := d.Schedule.Spec.Intervals; len(iv) != 1 || iv[0].Every != every {
			t.Errorf("intervals %+v, want every %s", iv, every)
		}
		if d.Schedule.Policy.Overlap != enumspb.SCHEDULE_OVERLAP_POLICY_SKIP {
			t.Errorf("overlap %s, want skip", d.Schedule.Policy.Overlap)
		}
		a, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || a.Workflow != workflows.RotationSweepWorkflowName || a.TaskQueue != workflows.TaskQueue || len(a.Args) != 1 {
			t.Fatalf("action %+v", d.Schedule.Action)
		}
		var in workflows.RotationSweepInput
		if err := converter.GetDefaultDataConverter().FromPayload(a.Args[0].(*commonpb.Payload), &in); err != nil {
			t.Fatal(err)
		}
		if in.DueDays != want.DueDays || in.RemindDays != want.RemindDays || in.Schedule != workflows.RotationSweepScheduleID {
			t.Errorf("input %+v, want %+v", in, want)
		}
	}

	if err := lifecycle.EnsureRotationSweepSchedule(ctx, sc, workflows.TaskQueue, lifecycle.RotationSweepConfig{}, log); err != nil {
		t.Fatal(err)
	}
	check(t, 24*time.Hour, workflows.RotationSweepInput{DueDays: workflows.RotationDueDays{Low: 90, Moderate: 30, High: 7, Critical: 7}})

	cfg := lifecycle.RotationSweepConfig{Every: 12 * time.Hour, DueDays: workflows.RotationDueDays{Low: 60, High: 3}, RemindDays: 2}
	if err := lifecycle.EnsureRotationSweepSchedule(ctx, sc, workflows.TaskQueue, cfg, log); err != nil {
		t.Fatal(err)
	}
	check(t, 12*time.Hour, workflows.RotationSweepInput{DueDays: workflows.RotationDueDays{Low: 60, Moderate: 30, High: 3, Critical: 7}, RemindDays: 2})

	for range 2 { // off twice: the second finds nothing to delete
		if err := lifecycle.EnsureRotationSweepSchedule(ctx, sc, workflows.TaskQueue, lifecycle.RotationSweepConfig{Every: -1}, log); err != nil {
			t.Fatal(err)
		}
	}
	var nf *serviceerror.NotFound
	if _, err := h.Describe(ctx); !errors.As(err, &nf) {
		t.Fatalf("describe after off: %v, want NotFound", err)
	}
}

func TestRotationSweepConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       lifecycle.RotationSweepConfig
		wantField string
	}{
		{"defaults", lifecycle.RotationSweepConfig{}, ""},
		{"off", lifecycle.RotationSweepConfig{Every: -1}, ""},
		{"too often", lifecycle.RotationSweepConfig{Every: time.Second}, "sweep_rotation_every"},
		{"negative days", lifecycle.RotationSweepConfig{DueDays: workflows.RotationDueDays{Moderate: -1}}, "rotation_due_days"},
		{"too many days", lifecycle.RotationSweepConfig{DueDays: workflows.RotationDueDays{Low: 5000}}, "rotation_due_days"},
		{"negative remind days", lifecycle.RotationSweepConfig{RemindDays: -1}, "rotation_remind_days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if e := errs.FromStatus(err); err == nil || e.Field != tt.wantField {
				t.Fatalf("err = %v, want field %s", err, tt.wantField)
			}
		})
	}
}
