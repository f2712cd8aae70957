package app_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/lifecycle/app"
)

func TestSweepFlags(t *testing.T) {
	t.Run("none keeps the defaults", func(t *testing.T) {
		var cfg app.Config
		if err := (app.SweepFlags{}).Apply(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Sweeps.ExpiredEvery != 0 || cfg.Sweeps.InactiveAction != "" || cfg.Deprovision.NoSignOffTriggers != nil || cfg.Deprovision.SignOffSteps != nil {
			t.Fatalf("config = %+v %+v, want the defaults left unset", cfg.Sweeps, cfg.Deprovision)
		}
	})
	t.Run("every setting", func(t *testing.T) {
		var cfg app.Config
		err := app.SweepFlags{
			ExpiredEvery: "10m", InactiveEvery: "off", OrphanedEvery: "48h", InactiveDays: 30,
			InactiveAction: "Deprovision", OrphanedAction: "review", MaxRetirements: "25", MaxRetirementPercent: "0",
			SignOffs: "security", NoSignOffTriggers: "ttl, task_completed, inactivity", RemindEvery: "2h", EscalateAfter: "8h",
		}.Apply(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		s, d := cfg.Sweeps, cfg.Deprovision
		if s.ExpiredEvery != 10*time.Minute || s.InactiveEvery >= 0 || s.OrphanedEvery != 48*time.Hour || s.InactiveDays != 30 ||
			s.InactiveAction != "deprovision" || s.OrphanedAction != "review" || s.MaxRetirements != 25 || s.MaxRetirementPercent != -1 {
			t.Errorf("sweeps = %+v", s)
		}
		if !slices.Equal(d.SignOffSteps, []string{"security"}) || !slices.Equal(d.NoSignOffTriggers, []string{"ttl", "task_completed", "inactivity"}) ||
			d.RemindEvery != 2*time.Hour || d.EscalateAfter != 8*time.Hour {
			t.Errorf("deprovision = %+v", d)
		}
	})
	t.Run("breaker", func(t *testing.T) {
		for _, tt := range []struct {
			flags            app.SweepFlags
			wantN, wantShare int
		}{
			{app.SweepFlags{MaxRetirements: "0"}, -1, 0},
			{app.SweepFlags{MaxRetirements: " 40 ", MaxRetirementPercent: "100"}, 40, 100},
			{app.SweepFlags{MaxRetirementPercent: "0"}, 0, -1},
		} {
			var cfg app.Config
			if err := tt.flags.Apply(&cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Sweeps.MaxRetirements != tt.wantN || cfg.Sweeps.MaxRetirementPercent != tt.wantShare {
				t.Errorf("%+v: breaker %d agents, %d%%; want %d, %d", tt.flags, cfg.Sweeps.MaxRetirements, cfg.Sweeps.MaxRetirementPercent, tt.wantN, tt.wantShare)
			}
		}
	})
	t.Run("none: every trigger needs sign-offs", func(t *testing.T) {
		var cfg app.Config
		if err := (app.SweepFlags{NoSignOffTriggers: "none"}).Apply(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Deprovision.NoSignOffTriggers == nil || len(cfg.Deprovision.NoSignOffTriggers) != 0 {
			t.Fatalf("no-sign-off triggers = %#v, want empty and not nil", cfg.Deprovision.NoSignOffTriggers)
		}
	})
	bad := []struct {
		name  string
		flags app.SweepFlags
		flag  string
	}{
		{"not a duration", app.SweepFlags{ExpiredEvery: "hourly"}, app.SweepExpiredEveryFlag},
		{"too often", app.SweepFlags{InactiveEvery: "30s"}, app.SweepInactiveEveryFlag},
		{"negative interval", app.SweepFlags{OrphanedEvery: "-1h"}, app.SweepOrphanedEveryFlag},
		{"negative days", app.SweepFlags{InactiveDays: -1}, app.SweepInactiveDaysFlag},
		{"unknown action", app.SweepFlags{InactiveAction: "delete"}, app.SweepInactiveActionFlag},
		{"unknown orphan action", app.SweepFlags{OrphanedAction: "notify"}, app.SweepOrphanedActionFlag},
		{"negative max retirements", app.SweepFlags{MaxRetirements: "-1"}, app.SweepMaxRetirementsFlag},
		{"max retirements not a number", app.SweepFlags{MaxRetirements: "ten"}, app.SweepMaxRetirementsFlag},
		{"percent above 100", app.SweepFlags{MaxRetirementPercent: "101"}, app.SweepMaxRetirementPercentFlag},
		{"percent with a sign", app.SweepFlags{MaxRetirementPercent: "5%"}, app.SweepMaxRetirementPercentFlag},
		{"unknown sign-off", app.SweepFlags{SignOffs: "owner,compliance"}, app.DeprovisionSignOffsFlag},
		{"sign-off twice", app.SweepFlags{SignOffs: "owner,owner"}, app.DeprovisionSignOffsFlag},
		{"unknown trigger", app.SweepFlags{NoSignOffTriggers: "ttl,done"}, app.DeprovisionNoSignOffTriggersFlag},
		{"short reminder", app.SweepFlags{RemindEvery: "10s"}, app.DeprovisionRemindEveryFlag},
		{"bad escalation", app.SweepFlags{EscalateAfter: "soon"}, app.DeprovisionEscalateAfterFlag},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.Config{RegistryAddr: "keep"}
			err := tt.flags.Apply(&cfg)
			if err == nil || !strings.Contains(err.Error(), "--"+tt.flag) {
				t.Fatalf("err = %v, want one naming --%s", err, tt.flag)
			}
			if cfg.RegistryAddr != "keep" || cfg.Sweeps != (app.Config{}).Sweeps || cfg.Deprovision.SignOffSteps != nil {
				t.Errorf("the config changed on an error: %+v", cfg)
			}
		})
	}
}
