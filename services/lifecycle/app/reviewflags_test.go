package app_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

func TestReviewFlags(t *testing.T) {
	good := []struct {
		name  string
		flags app.ReviewFlags
		want  lifecycle.ReviewConfig
	}{
		{"none keeps the defaults", app.ReviewFlags{}, lifecycle.ReviewConfig{}},
		{"every setting", app.ReviewFlags{Schedule: " 0 7 1 */3 * ", UsageDays: 30, AnswerDays: 7}, lifecycle.ReviewConfig{Cron: "0 7 1 */3 *", UsageDays: 30, AnswerDays: 7}},
		{"off", app.ReviewFlags{Schedule: "OFF"}, lifecycle.ReviewConfig{Cron: "off"}},
		{"a descriptor", app.ReviewFlags{Schedule: "@monthly"}, lifecycle.ReviewConfig{Cron: "@monthly"}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			var cfg app.Config
			if err := tt.flags.Apply(&cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Reviews != tt.want {
				t.Fatalf("reviews = %+v, want %+v", cfg.Reviews, tt.want)
			}
		})
	}
	bad := []struct {
		name  string
		flags app.ReviewFlags
		flag  string
	}{
		{"not a cron expression", app.ReviewFlags{Schedule: "quarterly"}, app.ReviewScheduleFlag},
		{"six fields", app.ReviewFlags{Schedule: "0 0 6 1 1,4,7,10 *"}, app.ReviewScheduleFlag},
		{"odd characters", app.ReviewFlags{Schedule: "0 6 1 1;4 *"}, app.ReviewScheduleFlag},
		{"negative usage days", app.ReviewFlags{UsageDays: -1}, app.ReviewUsageDaysFlag},
		{"too many usage days", app.ReviewFlags{UsageDays: 401}, app.ReviewUsageDaysFlag},
		{"too many answer days", app.ReviewFlags{AnswerDays: 91}, app.ReviewAnswerDaysFlag},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.Config{Reviews: lifecycle.ReviewConfig{UsageDays: 60}}
			err := tt.flags.Apply(&cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "--"+tt.flag+": ") {
				t.Fatalf("Apply: %v, want an error naming --%s", err, tt.flag)
			}
			if cfg.Reviews != (lifecycle.ReviewConfig{UsageDays: 60}) {
				t.Fatalf("a refused flag changed the config: %+v", cfg.Reviews)
			}
		})
	}
}
