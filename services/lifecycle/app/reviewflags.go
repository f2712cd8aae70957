package app

import (
	"fmt"
	"strings"

	"github.com/agentid/agentid/pkg/errs"
)

// Names and usages of the access review flags, shared by the lifecycle binary and `agentid dev`.
const (
	ReviewScheduleFlag  = "review-schedule"
	ReviewScheduleUsage = "when access review campaigns start: a cron expression in UTC (Schedule review-campaign; default \"0 6 1 1,4,7,10 *\", quarterly; off turns it off)"

	ReviewUsageDaysFlag  = "review-usage-days"
	ReviewUsageDaysUsage = "usage window of access reviews in days: a scope the agent did not use in it is proposed for removal (default 90, at most 400)"

	ReviewAnswerDaysFlag  = "review-answer-days"
	ReviewAnswerDaysUsage = "days the owner, then the sponsor, may take to answer an access review before it escalates (default 14, at most 90)"
)

// ReviewFlags are the access review settings as given on a command line; zero values keep the
// defaults.
type ReviewFlags struct {
	// Schedule is --review-schedule.
	Schedule string
	// UsageDays is --review-usage-days and AnswerDays --review-answer-days.
	UsageDays, AnswerDays int
}

// Apply checks the flags and sets cfg.Reviews; every error names its flag. Nothing of cfg changes on
// an error.
func (f ReviewFlags) Apply(cfg *Config) error {
	out := cfg.Reviews
	if v := strings.TrimSpace(f.Schedule); v != "" {
		out.Cron = v
		if strings.EqualFold(v, "off") {
			out.Cron = "off"
		}
	}
	if f.UsageDays != 0 {
		out.UsageDays = f.UsageDays
	}
	if f.AnswerDays != 0 {
		out.AnswerDays = f.AnswerDays
	}
	if err := out.Validate(); err != nil {
		flag := map[string]string{"review_cron": ReviewScheduleFlag, "review_usage_days": ReviewUsageDaysFlag, "review_answer_days": ReviewAnswerDaysFlag}[errs.FromStatus(err).Field]
		return fmt.Errorf("--%s: %s", flag, errs.FromStatus(err).Message)
	}
	cfg.Reviews = out
	return nil
}
