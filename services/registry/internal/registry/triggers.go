package registry

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/agentid/agentid/pkg/errs"
)

// Limits on the free text of lifecycle commands.
const (
	// maxTicket bounds a change ticket or incident reference.
	maxTicket = 200
	// maxSuspendReason bounds the reason of a suspension or resumption.
	maxSuspendReason = 1024
	// maxCause bounds a suspension cause.
	maxCause = 200
)

// Retirement triggers (RetireAgentRequest.trigger, AgentRetirementRequested.trigger).
const (
	// TriggerRequest: someone asked for it (the default).
	TriggerRequest = "request"
	// TriggerTTL: the agent's expire_time passed.
	TriggerTTL = "ttl"
	// TriggerInactivity: no activity for longer than the tenant allows.
	TriggerInactivity = "inactivity"
	// TriggerOwnerDeparted: the owner left and no sponsor took over.
	TriggerOwnerDeparted = "owner_departed"
	// TriggerReplacement: another agent replaces it.
	TriggerReplacement = "replacement"
	// TriggerPolicyViolation: it broke a policy.
	TriggerPolicyViolation = "policy_violation"
	// TriggerAnomaly: an incident about its behaviour decided to retire it.
	TriggerAnomaly = "anomaly"
	// TriggerTaskCompleted: an ephemeral agent's task reported completion.
	TriggerTaskCompleted = "task_completed"
)

// Triggers lists every retirement trigger, in the order the proto documents them.
var Triggers = []string{TriggerRequest, TriggerTTL, TriggerInactivity, TriggerOwnerDeparted, TriggerReplacement, TriggerPolicyViolation, TriggerAnomaly, TriggerTaskCompleted}

// NormalizeTrigger returns the retirement trigger to record for t: TriggerRequest for "", t itself
// when it is one of Triggers, else InvalidArgument naming the field trigger.
func NormalizeTrigger(t string) (string, error) {
	if t == "" {
		return TriggerRequest, nil
	}
	if !slices.Contains(Triggers, t) {
		return "", errs.InvalidArgument("trigger", fmt.Sprintf("%q is not a retirement trigger (one of %s)", printable(t), strings.Join(Triggers, ", ")))
	}
	return t, nil
}

// Suspension causes without a reference (SuspendAgentRequest.cause); the others are CauseAlert or
// CauseReview followed by an id.
const (
	// CauseOperator: an operator suspended the agent (the default).
	CauseOperator = "operator"
	// CausePolicy: a policy decision suspended it.
	CausePolicy = "policy"
	// CauseAlert prefixes the id of the alert whose incident suspended it.
	CauseAlert = "alert:"
	// CauseReview prefixes the access-review campaign that suspended it.
	CauseReview = "review:"
)

// causeRefRE is the reference after `alert:` or `review:`.
var causeRefRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]*$`)

// NormalizeCause returns the suspension cause to record for c: CauseOperator for "", c itself when
// it is `operator`, `policy`, `alert:<alert id>` or `review:<campaign>` (ids of letters, digits and
// `._:/@-`, at most 200 characters in all), else InvalidArgument naming the field cause.
func NormalizeCause(c string) (string, error) {
	switch c {
	case "":
		return CauseOperator, nil
	case CauseOperator, CausePolicy:
		return c, nil
	}
	for _, prefix := range []string{CauseAlert, CauseReview} {
		if ref, ok := strings.CutPrefix(c, prefix); ok {
			if len(c) > maxCause {
				return "", errs.InvalidArgument("cause", fmt.Sprintf("must be at most %d characters", maxCause))
			}
			if !causeRefRE.MatchString(ref) {
				return "", errs.InvalidArgument("cause", fmt.Sprintf("%q needs an id of letters, digits and ._:/@- after %q", printable(c), prefix))
			}
			return c, nil
		}
	}
	return "", errs.InvalidArgument("cause", fmt.Sprintf("%q is not a suspension cause (operator, policy, alert:<alert id> or review:<campaign>)", printable(c)))
}

// printable shortens v to at most 64 characters for an error message; callers quote it with %q,
// which escapes control characters.
func printable(v string) string {
	if r := []rune(v); len(r) > 64 {
		return string(r[:64]) + "…"
	}
	return v
}
