package app

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// Names and usages of the sweep and deprovisioning flags, shared by the lifecycle binary and
// `agentid dev`.
const (
	SweepExpiredEveryFlag  = "sweep-expired-every"
	SweepExpiredEveryUsage = "interval of the sweep retiring expired agents a TTL timer missed (Schedule sweep-expired; default 1h; off turns it off)"

	SweepInactiveEveryFlag  = "sweep-inactive-every"
	SweepInactiveEveryUsage = "interval of the inactivity sweep (Schedule sweep-inactive; default 24h; off turns it off)"

	SweepOrphanedEveryFlag  = "sweep-orphaned-every"
	SweepOrphanedEveryUsage = "interval of the sweep of agents without owner or sponsor (Schedule sweep-orphaned; default 24h; off turns it off)"

	SweepInactiveDaysFlag  = "sweep-inactive-days"
	SweepInactiveDaysUsage = "days without activity (monitor telemetry) after which the inactivity sweep finds an agent (default 90)"

	SweepInactiveActionFlag  = "sweep-inactive-action"
	SweepInactiveActionUsage = "what the inactivity sweep does with an inactive agent: review (record it in the run's result) or deprovision (retire it, trigger inactivity) (default review)"

	SweepOrphanedActionFlag  = "sweep-orphaned-action"
	SweepOrphanedActionUsage = "what the orphan sweep does with an agent without owner or sponsor: review or deprovision (trigger owner_departed) (default review)"

	SweepMaxRetirementsFlag  = "sweep-max-retirements"
	SweepMaxRetirementsUsage = "breaker of every deprovisioning sweep run: at most this many agents of a tenant retired per run, or --sweep-max-retirement-percent of its live agents when more; finding more, the run retires none and stops (default 10; 0: only the percentage)"

	SweepMaxRetirementPercentFlag  = "sweep-max-retirement-percent"
	SweepMaxRetirementPercentUsage = "breaker of every deprovisioning sweep run: at most this percentage (0-100) of a tenant's live agents retired per run, when more than --sweep-max-retirements (default 5; 0: only the count; 100: no breaker)"

	DeprovisionSignOffsFlag  = "deprovision-sign-offs"
	DeprovisionSignOffsUsage = "sign-offs a verified deprovisioning waits for, in order: owner,security (default), owner or security"

	DeprovisionNoSignOffTriggersFlag  = "deprovision-no-sign-off-triggers"
	DeprovisionNoSignOffTriggersUsage = "retirement triggers whose deprovisioning needs no sign-off, comma-separated (default ttl,task_completed; none: every trigger needs them)"

	DeprovisionRemindEveryFlag  = "deprovision-remind-every"
	DeprovisionRemindEveryUsage = "how often a waiting deprovisioning sign-off is reminded (default 24h)"

	DeprovisionEscalateAfterFlag  = "deprovision-escalate-after"
	DeprovisionEscalateAfterUsage = "how long a deprovisioning sign-off may wait before reminders also go to security (default 72h)"
)

// SweepFlags are the sweep and deprovisioning settings as given on a command line; empty strings
// keep the defaults.
type SweepFlags struct {
	// ExpiredEvery, InactiveEvery and OrphanedEvery are the --sweep-*-every values.
	ExpiredEvery, InactiveEvery, OrphanedEvery string
	// InactiveDays is --sweep-inactive-days (0: default).
	InactiveDays int
	// InactiveAction and OrphanedAction are --sweep-inactive-action and --sweep-orphaned-action.
	InactiveAction, OrphanedAction string
	// MaxRetirements and MaxRetirementPercent are --sweep-max-retirements and
	// --sweep-max-retirement-percent, whole numbers; 0 allows no retirement by that bound.
	MaxRetirements, MaxRetirementPercent string
	// SignOffs is --deprovision-sign-offs.
	SignOffs string
	// NoSignOffTriggers is --deprovision-no-sign-off-triggers.
	NoSignOffTriggers string
	// RemindEvery and EscalateAfter are --deprovision-remind-every and --deprovision-escalate-after.
	RemindEvery, EscalateAfter string
}

// Apply checks the flags and sets cfg.Sweeps and cfg.Deprovision; every error names its flag. Nothing
// of cfg changes on an error.
func (f SweepFlags) Apply(cfg *Config) error {
	out := *cfg
	for _, d := range []struct {
		flag, v string
		dst     *time.Duration
	}{
		{SweepExpiredEveryFlag, f.ExpiredEvery, &out.Sweeps.ExpiredEvery},
		{SweepInactiveEveryFlag, f.InactiveEvery, &out.Sweeps.InactiveEvery},
		{SweepOrphanedEveryFlag, f.OrphanedEvery, &out.Sweeps.OrphanedEvery},
	} {
		switch v := strings.TrimSpace(d.v); v {
		case "":
		case "off", "0":
			*d.dst = -1
		default:
			every, err := time.ParseDuration(v)
			if err != nil || every < lifecycle.MinSweepEvery {
				return fmt.Errorf("--%s %q: want a duration of at least %s (e.g. 1h) or off", d.flag, d.v, lifecycle.MinSweepEvery)
			}
			*d.dst = every
		}
	}
	if f.InactiveDays < 0 {
		return fmt.Errorf("--%s %d: want a positive number of days", SweepInactiveDaysFlag, f.InactiveDays)
	}
	if f.InactiveDays > 0 {
		out.Sweeps.InactiveDays = f.InactiveDays
	}
	for _, a := range []struct {
		flag, v string
		dst     *string
	}{{SweepInactiveActionFlag, f.InactiveAction, &out.Sweeps.InactiveAction}, {SweepOrphanedActionFlag, f.OrphanedAction, &out.Sweeps.OrphanedAction}} {
		switch v := strings.ToLower(strings.TrimSpace(a.v)); v {
		case "":
		case workflows.SweepActionReview, workflows.SweepActionDeprovision:
			*a.dst = v
		default:
			return fmt.Errorf("--%s %q: want review or deprovision", a.flag, a.v)
		}
	}
	for _, b := range []struct {
		flag, v, want string
		most          int
		dst           *int
	}{
		{SweepMaxRetirementsFlag, f.MaxRetirements, "a number of agents, 0 or more", math.MaxInt32, &out.Sweeps.MaxRetirements},
		{SweepMaxRetirementPercentFlag, f.MaxRetirementPercent, "a percentage from 0 to 100", 100, &out.Sweeps.MaxRetirementPercent},
	} {
		v := strings.TrimSpace(b.v)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > b.most {
			return fmt.Errorf("--%s %q: want %s", b.flag, b.v, b.want)
		}
		if n == 0 {
			n = -1 // SweepConfig's "none by this bound"; its 0 is the default
		}
		*b.dst = n
	}
	if f.SignOffs != "" {
		steps := splitList(f.SignOffs)
		if len(steps) == 0 || len(steps) > 2 || (len(steps) == 2 && steps[0] == steps[1]) {
			return fmt.Errorf("--%s %q: want owner,security, owner or security", DeprovisionSignOffsFlag, f.SignOffs)
		}
		for _, s := range steps {
			if s != workflows.StepOwner && s != workflows.StepSecurity {
				return fmt.Errorf("--%s %q: sign-off %q is neither owner nor security", DeprovisionSignOffsFlag, f.SignOffs, s)
			}
		}
		out.Deprovision.SignOffSteps = steps
	}
	if f.NoSignOffTriggers != "" {
		triggers := []string{}
		if strings.TrimSpace(strings.ToLower(f.NoSignOffTriggers)) != "none" {
			triggers = splitList(f.NoSignOffTriggers)
		}
		for _, t := range triggers {
			if !slices.Contains(workflows.Triggers, t) {
				return fmt.Errorf("--%s %q: %q is not a retirement trigger (one of %s)", DeprovisionNoSignOffTriggersFlag, f.NoSignOffTriggers, t, strings.Join(workflows.Triggers, ", "))
			}
		}
		out.Deprovision.NoSignOffTriggers = triggers
	}
	for _, d := range []struct {
		flag, v string
		dst     *time.Duration
	}{{DeprovisionRemindEveryFlag, f.RemindEvery, &out.Deprovision.RemindEvery}, {DeprovisionEscalateAfterFlag, f.EscalateAfter, &out.Deprovision.EscalateAfter}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(strings.TrimSpace(d.v))
		if err != nil || v < time.Minute {
			return fmt.Errorf("--%s %q: want a duration of at least 1m (e.g. 24h)", d.flag, d.v)
		}
		*d.dst = v
	}
	if err := out.Sweeps.Validate(); err != nil {
		return err
	}
	if err := out.Deprovision.Validate(); err != nil {
		return err
	}
	*cfg = out
	return nil
}

// splitList splits a comma-separated list, trimming and lower-casing each element and dropping
// empty ones.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			out = append(out, s)
		}
	}
	return out
}
