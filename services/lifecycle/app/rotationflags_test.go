package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/workflows"
)

func TestRotationFlags(t *testing.T) {
	t.Run("empty keeps the defaults", func(t *testing.T) {
		var cfg app.Config
		if err := (app.RotationFlags{}).Apply(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.RotationOverlap != 0 || cfg.RotationSweep != (app.Config{}).RotationSweep {
			t.Fatalf("config = %s %+v, want the defaults left unset", cfg.RotationOverlap, cfg.RotationSweep)
		}
	})
	t.Run("every setting", func(t *testing.T) {
		var cfg app.Config
		err := app.RotationFlags{Overlap: "20s", DueDays: "low=60, HIGH=3,critical=1", RemindDays: 2, SweepEvery: "12h"}.Apply(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := workflows.RotationDueDays{Low: 60, High: 3, Critical: 1}
		if cfg.RotationOverlap != 20*time.Second || cfg.RotationSweep.DueDays != want || cfg.RotationSweep.RemindDays != 2 || cfg.RotationSweep.Every != 12*time.Hour {
			t.Fatalf("config = %s %+v", cfg.RotationOverlap, cfg.RotationSweep)
		}
		if err := cfg.RotationSweep.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("off", func(t *testing.T) {
		var cfg app.Config
		if err := (app.RotationFlags{SweepEvery: "off"}).Apply(&cfg); err != nil || cfg.RotationSweep.Every >= 0 {
			t.Fatalf("every = %s, %v; want negative", cfg.RotationSweep.Every, err)
		}
	})
	for _, tt := range []struct {
		name  string
		flags app.RotationFlags
		flag  string
	}{
		{"overlap not a duration", app.RotationFlags{Overlap: "a day"}, app.RotationOverlapFlag},
		{"overlap too short", app.RotationFlags{Overlap: "10ms"}, app.RotationOverlapFlag},
		{"unknown tier", app.RotationFlags{DueDays: "extreme=1"}, app.RotationDueDaysFlag},
		{"not tier=days", app.RotationFlags{DueDays: "low:90"}, app.RotationDueDaysFlag},
		{"zero days", app.RotationFlags{DueDays: "low=0"}, app.RotationDueDaysFlag},
		{"tier twice", app.RotationFlags{DueDays: "low=9,low=10"}, app.RotationDueDaysFlag},
		{"negative remind days", app.RotationFlags{RemindDays: -1}, app.RotationRemindDaysFlag},
		{"sweep too often", app.RotationFlags{SweepEvery: "5s"}, app.SweepRotationEveryFlag},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.Config{RegistryAddr: "keep"}
			err := tt.flags.Apply(&cfg)
			if err == nil || !strings.Contains(err.Error(), "--"+tt.flag) {
				t.Fatalf("err = %v, want one naming --%s", err, tt.flag)
			}
			if cfg.RegistryAddr != "keep" || cfg.RotationOverlap != 0 || cfg.RotationSweep != (app.Config{}).RotationSweep {
				t.Fatalf("config changed on an error: %+v", cfg)
			}
		})
	}
}
