package app

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// Names and usages of the agent credential rotation flags, shared by the lifecycle binary and
// `agentid dev`.
const (
	RotationOverlapFlag  = "rotation-overlap"
	RotationOverlapUsage = "how long both keys of an agent credential rotation authenticate before the old one is removed and its tokens revoked (default 24h, at least 1s)"

	RotationDueDaysFlag  = "rotation-due-days"
	RotationDueDaysUsage = "days an agent's current key may be used before it is due for rotation, by risk tier: tier=days,... of low, moderate, high, critical (defaults low=90,moderate=30,high=7,critical=7; unclassified takes the strictest of high and critical)"

	RotationRemindDaysFlag  = "rotation-remind-days"
	RotationRemindDaysUsage = "how many days before its due date the owner of a key is reminded to rotate it (Schedule sweep-rotation; default 7)"

	SweepRotationEveryFlag  = "sweep-rotation-every"
	SweepRotationEveryUsage = "interval of the sweep reminding owners of keys due or overdue for rotation (Schedule sweep-rotation; default 24h; off turns it off)"
)

// MinRotationOverlap is the shortest rotation overlap the flags accept.
const MinRotationOverlap = time.Second

// RotationFlags are the rotation settings as given on a command line; empty values keep the
// defaults.
type RotationFlags struct {
	// Overlap is --rotation-overlap.
	Overlap string
	// DueDays is --rotation-due-days.
	DueDays string
	// RemindDays is --rotation-remind-days (0: default).
	RemindDays int
	// SweepEvery is --sweep-rotation-every.
	SweepEvery string
}

// Apply checks the flags and sets cfg.RotationOverlap and cfg.RotationSweep; every error names its
// flag. Nothing of cfg changes on an error.
func (f RotationFlags) Apply(cfg *Config) error {
	overlap, sweep := cfg.RotationOverlap, cfg.RotationSweep
	if v := strings.TrimSpace(f.Overlap); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < MinRotationOverlap {
			return fmt.Errorf("--%s %q: want a duration of at least %s (e.g. 24h)", RotationOverlapFlag, f.Overlap, MinRotationOverlap)
		}
		overlap = d
	}
	if v := strings.TrimSpace(f.DueDays); v != "" {
		days, err := parseDueDays(v)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", RotationDueDaysFlag, f.DueDays, err)
		}
		sweep.DueDays = days
	}
	if f.RemindDays != 0 {
		sweep.RemindDays = f.RemindDays
	}
	switch v := strings.ToLower(strings.TrimSpace(f.SweepEvery)); v {
	case "":
	case "off", "0":
		sweep.Every = -1
	default:
		every, err := time.ParseDuration(v)
		if err != nil || every < lifecycle.MinSweepEvery {
			return fmt.Errorf("--%s %q: want a duration of at least %s (e.g. 24h) or off", SweepRotationEveryFlag, f.SweepEvery, lifecycle.MinSweepEvery)
		}
		sweep.Every = every
	}
	if err := sweep.Validate(); err != nil {
		flag := map[string]string{"sweep_rotation_every": SweepRotationEveryFlag, "rotation_due_days": RotationDueDaysFlag, "rotation_remind_days": RotationRemindDaysFlag}[errs.FromStatus(err).Field]
		return fmt.Errorf("--%s: %s", flag, errs.FromStatus(err).Message)
	}
	cfg.RotationOverlap, cfg.RotationSweep = overlap, sweep
	return nil
}

// parseDueDays parses tier=days,... (tiers low, moderate, high, critical; each at most once).
func parseDueDays(v string) (workflows.RotationDueDays, error) {
	var d workflows.RotationDueDays
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		tier, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		tier = strings.ToLower(strings.TrimSpace(tier))
		days, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || err != nil {
			return d, fmt.Errorf("%q is not tier=days", part)
		}
		if days < 1 || days > workflows.MaxRotationDueDays {
			return d, fmt.Errorf("%s=%d: days must be between 1 and %d", tier, days, workflows.MaxRotationDueDays)
		}
		if seen[tier] {
			return d, fmt.Errorf("tier %s is given twice", tier)
		}
		seen[tier] = true
		switch tier {
		case "low":
			d.Low = days
		case "moderate":
			d.Moderate = days
		case "high":
			d.High = days
		case "critical":
			d.Critical = days
		default:
			return d, fmt.Errorf("tier %q is not one of low, moderate, high, critical", tier)
		}
	}
	return d, nil
}
