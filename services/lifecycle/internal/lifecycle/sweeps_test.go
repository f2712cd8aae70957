package lifecycle_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
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
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	// warnings returns the warnings logged since the last call, as schedule id -> previous -> configured.
	warnings := func(t *testing.T) map[string][2]string {
		t.Helper()
		out := map[string][2]string{}
		for line := range strings.Lines(logs.String()) {
			var rec struct {
				Level      string `json:"level"`
				ScheduleID string `json:"schedule_id"`
				Previous   string `json:"previous"`
				Configured string `json:"configured"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if rec.Level == "WARN" {
				out[rec.ScheduleID] = [2]string{rec.Previous, rec.Configured}
			}
		}
		logs.Reset()
		return out
	}

	type want struct {
		every          time.Duration
		action         string
		days           int
		maxRetirements int
		maxPercent     int
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
		if in.Kind != kind || in.Action != w.action || in.Schedule != workflows.SweepScheduleID(kind) || (kind == workflows.SweepInactive && in.InactiveDays != w.days) ||
			in.MaxRetirements != w.maxRetirements || in.MaxRetirementPercent != w.maxPercent {
			t.Errorf("%s: input %+v, want action %s (%d days), breaker %d agents or %d%%", kind, in, w.action, w.days, w.maxRetirements, w.maxPercent)
		}
		return d
	}

	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, lifecycle.SweepConfig{}, log); err != nil {
		t.Fatal(err)
	}
	check(t, workflows.SweepExpired, want{time.Hour, workflows.SweepActionDeprovision, 0, 0, 0})
	check(t, workflows.SweepInactive, want{24 * time.Hour, workflows.SweepActionReview, 90, 0, 0})
	check(t, workflows.SweepOrphaned, want{24 * time.Hour, workflows.SweepActionReview, 0, 0, 0})
	if w := warnings(t); len(w) != 0 {
		t.Errorf("warnings when creating the schedules: %v", w)
	}

	// The same configuration again (a restart): nothing changes.
	before, err := sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepExpired)).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, lifecycle.SweepConfig{}, log); err != nil {
		t.Fatalf("second start: %v", err)
	}
	after := check(t, workflows.SweepExpired, want{time.Hour, workflows.SweepActionDeprovision, 0, 0, 0})
	if !after.Info.CreatedAt.Equal(before.Info.CreatedAt) {
		t.Errorf("the schedule was created again: %s, then %s", before.Info.CreatedAt, after.Info.CreatedAt)
	}
	if w := warnings(t); len(w) != 0 {
		t.Errorf("warnings when a replica starts with the same configuration: %v", w)
	}

	// An operator pauses the inactivity sweep; the configuration changes: updated in place, still
	// paused; the orphan sweep is turned off.
	if err := sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepInactive)).Pause(ctx, client.SchedulePauseOptions{Note: "audit week"}); err != nil {
		t.Fatal(err)
	}
	cfg := lifecycle.SweepConfig{ExpiredEvery: 10 * time.Minute, InactiveEvery: 2 * time.Hour, InactiveDays: 30,
		InactiveAction: workflows.SweepActionDeprovision, OrphanedEvery: -1, MaxRetirements: 3, MaxRetirementPercent: -1}
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, cfg, log); err != nil {
		t.Fatal(err)
	}
	check(t, workflows.SweepExpired, want{10 * time.Minute, workflows.SweepActionDeprovision, 0, 3, -1})
	d := check(t, workflows.SweepInactive, want{2 * time.Hour, workflows.SweepActionDeprovision, 30, 3, -1})
	if !d.Schedule.State.Paused {
		t.Error("the operator's pause was lifted by the update")
	}
	// Each changed or deleted schedule is a warning naming it with both configurations.
	wantWarnings := map[string][2]string{
		workflows.SweepScheduleID(workflows.SweepExpired): {
			"every=1h0m0s action=deprovision inactive_days=0 max_retirements=0 max_retirement_percent=0",
			"every=10m0s action=deprovision inactive_days=0 max_retirements=3 max_retirement_percent=-1"},
		workflows.SweepScheduleID(workflows.SweepInactive): {
			"every=24h0m0s action=review inactive_days=90 max_retirements=0 max_retirement_percent=0",
			"every=2h0m0s action=deprovision inactive_days=30 max_retirements=3 max_retirement_percent=-1"},
		workflows.SweepScheduleID(workflows.SweepOrphaned): {
			"every=24h0m0s action=review inactive_days=0 max_retirements=0 max_retirement_percent=0", "off"},
	}
	if w := warnings(t); !maps.Equal(w, wantWarnings) {
		t.Errorf("warnings after a configuration change:\n%v\nwant\n%v", w, wantWarnings)
	}
	_, err = sc.GetHandle(ctx, workflows.SweepScheduleID(workflows.SweepOrphaned)).Describe(ctx)
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("orphan sweep turned off: describe err = %v, want NotFound", err)
	}
	// Turned off twice, the same configuration again: still fine, and no warning.
	if err := lifecycle.EnsureSweepSchedules(ctx, sc, workflows.TaskQueue, cfg, log); err != nil {
		t.Fatal(err)
	}
	if w := warnings(t); len(w) != 0 {
		t.Errorf("warnings when a replica starts with the changed configuration: %v", w)
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
		{"breaker set", lifecycle.SweepConfig{MaxRetirements: 25, MaxRetirementPercent: 100}, ""},
		{"breaker bounds off", lifecycle.SweepConfig{MaxRetirements: -1, MaxRetirementPercent: -1}, ""},
		{"negative max retirements", lifecycle.SweepConfig{MaxRetirements: -2}, "sweep_max_retirements"},
		{"percent above 100", lifecycle.SweepConfig{MaxRetirementPercent: 101}, "sweep_max_retirement_percent"},
		{"negative percent", lifecycle.SweepConfig{MaxRetirementPercent: -5}, "sweep_max_retirement_percent"},
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
