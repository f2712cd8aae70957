package workflows_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
)

// TestIncidentRemindsSecurity: an incident escalated to security does not wait silently — security is
// reminded every SecurityRemindEvery (a minute is raised to an hour), at most daily after
// IncidentRemindersAtFullRate reminders; each reminder has its own notification id, the reminders are
// counted in the status and summed up in one timeline line, never one action each.
func TestIncidentRemindsSecurity(t *testing.T) {
	const agentID = "incremind"
	f, n := incidentFixture(t, agentID, registryv1.RiskTier_RISK_TIER_HIGH)
	// Escalated to security at 8h (owner 4h, sponsor 4h); reminded hourly from 9h to 56h (48), then
	// daily: at 80h. Decided at 81h: 49 reminders.
	const decideAt, wantReminders = 81 * time.Hour, workflows.IncidentRemindersAtFullRate + 1
	var during workflows.IncidentStatus
	f.env.RegisterDelayedCallback(func() { during = f.incidentStatus(t) }, 8*time.Hour+90*time.Minute)
	out := f.decide(decideAt, "d0", decisionToken(t, agentID, "sec@corp.example", "security", "restore", "security-approver"))
	in := incidentInput(agentID, "critical", "high")
	in.SecurityRemindEvery = time.Minute
	f.env.ExecuteWorkflow(workflows.IncidentWorkflow, in)
	res := incidentResult(t, f)
	if res.Result != workflows.OutcomeRestored || out.completed != nil || out.rejected != nil {
		t.Fatalf("result = %+v (update: %v / %v), want restored", res, out.rejected, out.completed)
	}
	if during.Reminders != 1 || during.LastReminder == nil || during.Decider != workflows.StepSecurity {
		t.Fatalf("status at 9h30 = %+v, want one reminder to security so far", during)
	}
	var reminders []workflows.Notification
	ids := map[string]bool{}
	n.mu.Lock()
	for _, m := range n.sent {
		if m.Kind == workflows.NotificationIncidentReminder {
			reminders = append(reminders, m)
			ids[m.ID] = true
		}
	}
	n.mu.Unlock()
	if len(reminders) != wantReminders || len(ids) != wantReminders {
		t.Fatalf("%d reminders (%d distinct ids), want %d", len(reminders), len(ids), wantReminders)
	}
	for _, m := range reminders {
		if m.RecipientRole != workflows.StepSecurity || m.Decider != workflows.StepSecurity {
			t.Fatalf("reminder %+v, want one to security, who decides", m)
		}
	}
	final := f.incidentStatus(t)
	if final.Reminders != wantReminders {
		t.Fatalf("status reminders = %d, want %d", final.Reminders, wantReminders)
	}
	if slices.ContainsFunc(final.Taken, func(s string) bool { return strings.Contains(s, "remind") }) {
		t.Fatalf("taken %q records reminders one by one", final.Taken)
	}
	var lines []string
	for _, l := range final.Timeline {
		if strings.Contains(l, "remind") {
			lines = append(lines, l)
		}
	}
	if want := fmt.Sprintf("security reminded %d times, the last at ", wantReminders); len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Fatalf("timeline reminder lines = %q, want one saying %q", lines, want)
	}
}
